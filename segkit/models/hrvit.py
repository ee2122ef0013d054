"""HRViT: multi-scale high-resolution vision transformer, as a backbone and with a SegFormer head.

Paper: Jiaqi Gu et al., "Multi-Scale High-Resolution Vision Transformer for Semantic Segmentation",
CVPR 2022 (arXiv:2111.01236).
Upstream: facebookresearch/HRViT (commit 6a63b5b), ``models/hrvit.py`` and the mmseg 0.x fork in
``segmentation/`` (backbone ``hrvit_b*``, ``SegformerHead``); licence CC BY-NC 4.0. This file is an
independent Paddle re-implementation written from the paper and that code; no upstream code is copied.

What differs from upstream:

* Any input size. Upstream fuses branches with ``nn.Upsample(scale_factor=2**k)``, so it only runs
  when ceil(side / 4) is a multiple of 8. Here the up paths upsample by 2**k and crop to the target
  branch's size. The strided depth-wise convs make branch sizes ceil(side / stride), so a token of a
  coarse branch still covers the fine tokens starting at its own position; where upstream runs, the
  crop is a no-op and the results are the same.
* Tokens stay in a (B, H, W, C) layout between the parts of a block; inside them the layout suits
  Paddle's CPU kernels (same function, float summation order aside): the attention works on
  heads-first (B * heads, H, W, d) maps, with the logits' scale folded into the query weights, and
  computes vertical stripes as horizontal stripes of the transposed map (attention is
  permutation-invariant inside a stripe); the depth-wise convs of the attention, MixCFN and the
  patch embedding run on the (B, H, W, C) layout too (``Conv2D(data_format="NHWC")``), so their
  linears are plain matrix products and oneDNN reorders nothing. In dygraph on the CPU one operator
  (``segkit.ops.stripe_attention``, with its gradient) computes the attention from the query/value
  linear's output, and MixCFN's 3x3 and 5x5 halves are one 5x5 depth-wise conv (3x3 kernels
  zero-padded), so its channels are never split and re-joined.
* Padded window positions are masked (-100, as upstream) as keys only. Upstream also adds -100 to
  whole rows of padded queries; softmax is shift-invariant and those rows are cropped, so the
  valid outputs are the same. Padding and mask are built from tensor ops, so a static export with
  a dynamic image size (``[None, 3, None, None]``) traces and serves every size. The operator of
  dygraph on the CPU attends over a cut stripe's valid tokens only: a padded key's exp(-100) is
  below float32's resolution against the valid keys unless all of a row's valid logits are below
  about -90.
* Module and parameter names are segkit's; ``convert_official_state_dict`` (used automatically by
  ``remap_checkpoint_keys``) maps the official PyTorch (and mmseg) keys and layouts onto them.
* The ImageNet classifier (``HRViTClassifier``) is not ported: segkit only needs the features.

Layout: building blocks, the backbone, the segmentation model, the checkpoint key converter, the
registered variants: ``hrvit_b1/b2/b3`` name the backbone in the backbone registry (Python
``hrvit_b1_backbone``, ...) and backbone plus head in the model registry.
"""

import math
import re
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import paddle
import paddle.nn.functional as F
from paddle import nn

from segkit import ops
from segkit.errors import ConfigError
from segkit.models.base import Backbone
from segkit.models.layers import (Conv2D, DropPath, LayerNorm, Linear, gelu, linear, onednn_applies, softmax,
                                  swap_middle, upsample_nearest)
from segkit.models.segformer import SegFormer
from segkit.models.upstream import BN_BUFFERS, strip_training_wrappers, torch_linear
from segkit.registry import BACKBONES, MODELS
from segkit.weights import Tolerance

# The official masking constant for padded window positions (not -inf: it must stay finite).
MASK_VALUE = -100.0


def _trunc_normal_linears(layer: nn.Layer) -> None:
    """Upstream initialisation of linear layers: truncated normal (std 0.02) weights, zero biases."""
    init = nn.initializer.TruncatedNormal(std=0.02)
    zeros = nn.initializer.Constant(0.0)
    for sub in layer.sublayers(include_self=True):
        if isinstance(sub, nn.Linear):
            init(sub.weight)
            if sub.bias is not None:
                zeros(sub.bias)


def to_nchw(x: paddle.Tensor) -> paddle.Tensor:
    """(B, H, W, C) tokens -> (B, C, H, W) maps, for convolutions."""
    b, h, w, c = x.shape
    return x.reshape([b, h * w, c]).transpose([0, 2, 1]).reshape([b, c, h, w])


def to_nhwc(x: paddle.Tensor) -> paddle.Tensor:
    """(B, C, H, W) maps -> (B, H, W, C) tokens, for norms and linears."""
    b, c, h, w = x.shape
    return x.reshape([b, c, h * w]).transpose([0, 2, 1]).reshape([b, h, w, c])


# ----------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------


class ConvStem(nn.Layer):
    """Two 3x3 stride-2 convolutions (with bias), each followed by BatchNorm and ReLU: stride 4.

    Args:
        in_channels: image channels.
        out_channels: width after the stem; the first conv has half of it.
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 64):
        super().__init__()
        self.conv1 = Conv2D(in_channels, out_channels // 2, 3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2D(out_channels // 2)
        self.conv2 = Conv2D(out_channels // 2, out_channels, 3, stride=2, padding=1)
        self.bn2 = nn.BatchNorm2D(out_channels)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(x)))


class DownPath(nn.Layer):
    """Fusion path from a finer branch: strided depth-wise conv + BN, then 1x1 conv + BN.

    The depth-wise kernel is ``factor + 1`` with stride ``factor`` and padding ``factor // 2``, so
    the output size is ceil(size / factor) for any input size.
    """

    def __init__(self, in_channels: int, out_channels: int, factor: int):
        super().__init__()
        self.depthwise = Conv2D(
            in_channels, in_channels, factor + 1, stride=factor, padding=factor // 2,
            groups=in_channels, bias_attr=False,
        )
        self.depthwise_bn = nn.BatchNorm2D(in_channels)
        self.pointwise = Conv2D(in_channels, out_channels, 1)
        self.pointwise_bn = nn.BatchNorm2D(out_channels)

    def forward(self, x: paddle.Tensor, size: Sequence[int]) -> paddle.Tensor:
        return self.pointwise_bn(self.pointwise(self.depthwise_bn(self.depthwise(x))))


class UpPath(nn.Layer):
    """Fusion path from a coarser branch: 1x1 conv + BN, nearest upsampling by ``factor``.

    The upsampled map is cropped to the target size: coarse sizes are ceil(size / stride), so
    ``factor`` times a coarse size can exceed the fine size by up to ``factor - 1``.
    """

    def __init__(self, in_channels: int, out_channels: int, factor: int):
        super().__init__()
        self.factor = factor
        self.pointwise = Conv2D(in_channels, out_channels, 1)
        self.pointwise_bn = nn.BatchNorm2D(out_channels)

    def forward(self, x: paddle.Tensor, size: Sequence[int]) -> paddle.Tensor:
        return upsample_nearest(self.pointwise_bn(self.pointwise(x)), self.factor, size)


class SamePath(nn.Layer):
    """Fusion path of a branch to itself (identity)."""

    def forward(self, x: paddle.Tensor, size: Sequence[int]) -> paddle.Tensor:
        return x


class FusionBlock(nn.Layer):
    """Cross-resolution fusion: every output branch sums all input branches brought to its scale, then GELU.

    When there is one more output than input, the new (coarsest) branch is made by down paths only.

    Args:
        in_channels: widths of the input branches (finest first).
        out_channels: widths of the output branches; equal to ``in_channels`` or one longer.
    """

    def __init__(self, in_channels: Sequence[int], out_channels: Sequence[int]):
        super().__init__()
        self.paths = nn.LayerList()
        for i, outc in enumerate(out_channels):
            row = nn.LayerList()
            for j, inc in enumerate(in_channels):
                if j == i:
                    row.append(SamePath())
                elif j < i:
                    row.append(DownPath(inc, outc, 2 ** (i - j)))
                else:
                    row.append(UpPath(inc, outc, 2 ** (j - i)))
            self.paths.append(row)

    def forward(self, xs: List[paddle.Tensor]) -> List[paddle.Tensor]:
        sizes = [x.shape[2:] for x in xs]
        outs = []
        for i, row in enumerate(self.paths):
            size = sizes[i] if i < len(sizes) else None  # only up paths use it, and a new branch has none
            total = None
            for path, x in zip(row, xs):
                y = path(x, size)
                total = y if total is None else total + y
            outs.append(gelu(total))
        return outs


class PatchEmbed(nn.Layer):
    """Per-branch patch embedding: 1x1 conv, depth-wise 3x3 conv, LayerNorm; returns (B, H, W, C).

    The depth-wise conv runs on the tokens' (B, H, W, C) layout (see ``Conv2D``).
    """

    def __init__(self, in_channels: int, dim: int):
        super().__init__()
        self.pointwise = Conv2D(in_channels, dim, 1)
        self.depthwise = Conv2D(dim, dim, 3, padding=1, groups=dim, data_format="NHWC")
        self.norm = LayerNorm(dim)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.norm(self.depthwise(to_nhwc(self.pointwise(x))))


def _key_mask(h, pad, w, stripe: int, dtype) -> paddle.Tensor:
    """[n, stripe * W, stripe * W] logit bias: MASK_VALUE for the padded keys (rows >= h), 0 elsewhere.

    Expanded to the logits' trailing shape: Paddle's CPU add broadcasts that layout 4x faster than
    a [1, n, 1, 1, S] mask.
    """
    n = (h + pad) // stripe
    is_padding = (paddle.arange(h + pad) >= h).astype(dtype).reshape([n, 1, stripe, 1])
    keys = is_padding.expand([n, 1, stripe, w]).reshape([n, 1, stripe * w]) * MASK_VALUE
    return keys.expand([n, stripe * w, stripe * w])


def _stripe_attention(q: paddle.Tensor, v: paddle.Tensor, stripe: int) -> paddle.Tensor:
    """Attention inside horizontal stripes of ``stripe`` rows for one head; keys are the values.

    Args:
        q: queries, already multiplied by the logits' scale, (B, H, W, d); B may hold heads too.
        v: values, (B, H, W, d).
        stripe: stripe height in rows.

    Returns:
        (B, H, W, d).
    """
    # Python ints in dygraph; shape tensors for dimensions left dynamic when exporting with to_static.
    b, h, w, d = q.shape
    pad = (stripe - h % stripe) % stripe
    padded = not isinstance(pad, int) or pad > 0  # a traced size may need padding: take that path
    if padded:
        zeros = paddle.zeros([b, pad, w, d], dtype=q.dtype)
        q, v = paddle.concat([q, zeros], axis=1), paddle.concat([v, zeros], axis=1)
    n = (h + pad) // stripe
    q, v = q.reshape([b, n, stripe * w, d]), v.reshape([b, n, stripe * w, d])
    logits = paddle.matmul(q, v, transpose_y=True)
    if padded:
        logits = logits + _key_mask(h, pad, w, stripe, logits.dtype)
    out = paddle.matmul(softmax(logits), v).reshape([b, h + pad, w, d])
    return out[:, :h].contiguous() if padded else out


def stripe_attention(
    q: paddle.Tensor, v: paddle.Tensor, stripe: int, num_heads: int, scale: float
) -> paddle.Tensor:
    """Attention inside horizontal stripes of ``stripe`` rows; keys are the values.

    The height is zero-padded to a multiple of ``stripe`` and the padded keys of the last stripe get
    -100 added to their logits before softmax; padded query rows are cropped from the result.

    Args:
        q: queries, (B, H, W, C).
        v: values, also used as keys, (B, H, W, C).
        stripe: stripe height in rows.
        num_heads: heads; C is split into ``num_heads`` groups of C // num_heads channels.
        scale: multiplier of the logits.

    Returns:
        (B, H, W, C).
    """
    b, h, w, c = q.shape
    d = c // num_heads

    def heads_first(t: paddle.Tensor) -> paddle.Tensor:  # (B * heads, H, W, d)
        return swap_middle(t.reshape([b, h * w, num_heads, d])).reshape([b * num_heads, h, w, d])

    out = _stripe_attention(heads_first(q * scale), heads_first(v), stripe)
    return swap_middle(out.reshape([b, num_heads, h * w, d])).reshape([b, h, w, c])


class CrossShapedAttention(nn.Layer):
    """HRViT attention: cross-shaped stripes with shared key/value and a parallel depth-wise path.

    One linear gives queries and values (the values double as keys). Half of the channels attend
    inside horizontal stripes of height ``window``, the other half inside vertical stripes of that
    width. A depth-wise 3x3 conv on Hardswish(v) is added, then Hardswish, an output linear and a
    BatchNorm over tokens whose weight and bias start at zero (the block starts as its shortcut).

    Args:
        dim: token width.
        num_heads: heads of the whole layer (half of them per stripe direction).
        window: stripe width in tokens.
        proj_drop: dropout after the output linear.
    """

    def __init__(self, dim: int, num_heads: int, window: int, proj_drop: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ConfigError(f"HRViT attention: width {dim} is not divisible by {num_heads} heads.")
        self.window = window
        head_dim = dim // num_heads
        half = dim // 2
        # Upstream: when half the width is narrower than a head, each direction uses one head of it.
        self.head_dim = min(head_dim, half)
        self.heads_per_direction = half // self.head_dim
        self.scale = self.head_dim ** -0.5
        self.qv = nn.Linear(dim, 2 * dim)
        # The logits' scale applied to the query columns of ``qv`` (not saved with the weights).
        self.register_buffer(
            "qv_scale", paddle.to_tensor([self.scale] * dim + [1.0] * dim, dtype="float32"), persistable=False
        )
        self.local_conv = Conv2D(dim, dim, 3, padding=1, groups=dim, data_format="NHWC")
        self.proj = Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        zero = paddle.ParamAttr(initializer=nn.initializer.Constant(0.0))
        # Named without "norm": the recipe's weight-decay exemption matches "norm" in names, and
        # upstream's ``attn_bn`` is not exempt.
        self.token_bn = nn.BatchNorm1D(dim, weight_attr=zero, bias_attr=zero)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        b, h, w, c = x.shape
        # Queries come out of the linear already scaled: the logits need no pass of their own.
        qv = linear(x, self.qv.weight * self.qv_scale, self.qv.bias * self.qv_scale)
        if onednn_applies(qv):
            # Dygraph on the CPU: one operator, with its gradient, from the linear's output as it lies.
            attn, values = ops.stripe_attention(qv, self.heads_per_direction, self.window)
        else:
            attn, values = self._attention(x, qv)
        out = F.hardswish(attn + self.local_conv(F.hardswish(values)))
        out = self.proj_drop(self.proj(out))
        return self.token_bn(out.reshape([-1, c])).reshape([b, h, w, c])

    def _attention(self, x: paddle.Tensor, qv: paddle.Tensor) -> Tuple[paddle.Tensor, paddle.Tensor]:
        """Stripe attention of ``qv``, the linear of ``x``, from Paddle operators (traced programs, GPU, mixed
        precision, ``paddle_kernels()``): (output, values), both shaped as ``x``."""
        b, h, w, c = x.shape
        heads, d = self.heads_per_direction, self.head_dim
        # Channels (q | v, rows | cols, head, d) -> (B, groups, H * W, d); heads join the batch.
        # Splits back-propagate as one concat where slices each write a full-size gradient.
        groups = swap_middle(qv.reshape([b, h * w, 4 * heads, d]))
        q_rows, q_cols, values = paddle.split(groups, [heads, heads, 2 * heads], axis=1)
        v_rows, v_cols = paddle.split(values, 2, axis=1)

        def maps(t: paddle.Tensor) -> paddle.Tensor:  # (B * heads, H, W, d)
            return t.reshape([b * heads, h, w, d])

        def transposed(t: paddle.Tensor) -> paddle.Tensor:  # (B * heads, W, H, d)
            return swap_middle(maps(t))

        def tokens(t: paddle.Tensor) -> paddle.Tensor:  # (B, G, H * W, d) -> (B, H, W, G * d)
            return swap_middle(t).reshape([b, h, w, c])

        rows = _stripe_attention(maps(q_rows), maps(v_rows), self.window)
        # Vertical stripes are horizontal stripes of the transposed map.
        cols = swap_middle(_stripe_attention(transposed(q_cols), transposed(v_cols), self.window))
        attn = tokens(paddle.concat([rows.reshape([b, heads, h * w, d]), cols.reshape([b, heads, h * w, d])], axis=1))
        return attn, tokens(values)


def kronecker_factors(width: int) -> Tuple[int, int]:
    """The (k, p) of the DES shortcut: with e = floor(log2(width)), p = 2**(e - e // 2), k = width // p.

    Upstream's rule: 32 -> (4, 8), 48 -> (6, 8), 240 -> (15, 16), 512 -> (16, 32).
    """
    if width % 2:
        raise ConfigError(f"HRViT DES shortcut needs an even width, got {width}.")
    exponent = int(math.log2(width))
    p = 2 ** (exponent - exponent // 2)
    if width % p:
        raise ConfigError(f"HRViT DES shortcut: width {width} is not a multiple of {p}.")
    return width // p, p


class DiversityShortcut(nn.Layer):
    """DES: a Kronecker-factorised linear shortcut, ``left(GELU(right(x viewed as (k, p))^T))^T``."""

    def __init__(self, dim: int):
        super().__init__()
        self.k, self.p = kronecker_factors(dim)
        self.right = Linear(self.p, self.p)
        self.left = Linear(self.k, self.k)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        shape = x.shape
        # 2-D products (a [tokens, k, p] @ [p, p] broadcast product's weight gradient is a sum over
        # tokens that Paddle computes several times slower) and 3-D transposes (Paddle copies 5-D
        # strided views ~20x slower).
        y = self.right(x.reshape([-1, self.p]))
        y = gelu(y.reshape([-1, self.k, self.p]).transpose([0, 2, 1]))  # (tokens, p, k)
        y = self.left(y.reshape([-1, self.k]))
        return y.reshape([-1, self.p, self.k]).transpose([0, 2, 1]).reshape(shape)


class MixCFN(nn.Layer):
    """Feed-forward with mixed-scale depth-wise convs: fc1, half 3x3 / half 5x5 depth-wise, GELU, fc2.

    On (B, H, W, C) tokens throughout: the depth-wise convs run on that layout (see ``Conv2D``).
    """

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = Linear(dim, hidden)
        self.half = hidden // 2
        self.dw3 = Conv2D(self.half, self.half, 3, padding=1, groups=self.half, data_format="NHWC")
        self.dw5 = Conv2D(hidden - self.half, hidden - self.half, 5, padding=2, groups=hidden - self.half,
                          data_format="NHWC")
        self.fc2 = Linear(hidden, dim)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        y = self.fc1(x)
        if onednn_applies(y):
            # One 5x5 depth-wise conv over all channels, the 3x3 kernels zero-padded: the same sums (bit for bit
            # in tests), without splitting and re-joining the channels (two copies of y; forward 1.3-1.9 ms
            # against 5.8-7.4 ms on 1x128x128x128, forward + backward 13.6 against 17.7 ms).
            weight = paddle.concat([F.pad(self.dw3.weight, [1, 1, 1, 1]), self.dw5.weight])
            bias = paddle.concat([self.dw3.bias, self.dw5.bias])
            mixed = ops.conv2d(y, weight, bias, 1, [2, 2], 1, weight.shape[0], channels_last=True)
        else:
            y3, y5 = paddle.split(y, [self.half, self.dw5.weight.shape[0]], axis=-1)
            mixed = paddle.concat([self.dw3(y3), self.dw5(y5)], axis=-1)
        return self.fc2(gelu(mixed))


class HRViTBlock(nn.Layer):
    """x = x + DropPath(attn(LN(x)) + DES(x)); x = x + DropPath(MixCFN(LN(x))), on (B, H, W, C) tokens."""

    def __init__(
        self, dim: int, num_heads: int, window: int, mlp_ratio: float, drop_path: float = 0.0,
        proj_drop: float = 0.0,
    ):
        super().__init__()
        self.attn_norm = LayerNorm(dim)
        self.attn = CrossShapedAttention(dim, num_heads, window, proj_drop)
        self.shortcut = DiversityShortcut(dim)
        self.ffn_norm = LayerNorm(dim)
        self.ffn = MixCFN(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        x = x + self.drop_path(self.attn(self.attn_norm(x)) + self.shortcut(x))
        return x + self.drop_path(self.ffn(self.ffn_norm(x)))


class HRViTStage(nn.Layer):
    """A fusion block, then per branch: patch embedding, HRViT blocks, LayerNorm.

    Args:
        in_channels: widths of the incoming branches.
        out_channels: widths of the branches after this stage (one more than ``in_channels`` when
            the stage opens a new branch).
        depths: blocks per branch.
        head_dim: channels per attention head (heads = width // head_dim).
        windows: stripe width per branch.
        mlp_ratios: MixCFN expansion per branch.
        drop_path_rates: drop-path rate of the j-th block of every branch.
        proj_drop: dropout after the attention output linear.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        out_channels: Sequence[int],
        depths: Sequence[int],
        head_dim: int,
        windows: Sequence[int],
        mlp_ratios: Sequence[float],
        drop_path_rates: Sequence[float],
        proj_drop: float = 0.0,
    ):
        super().__init__()
        fused = list(in_channels)
        if len(out_channels) == len(in_channels) + 1:
            fused.append(out_channels[-1])
        elif len(out_channels) != len(in_channels):
            raise ConfigError(
                f"HRViT stage: {len(in_channels)} input branches can become {len(in_channels)} or "
                f"{len(in_channels) + 1} branches, not {len(out_channels)}."
            )
        self.fusion = FusionBlock(in_channels, fused)
        self.embeds = nn.LayerList([PatchEmbed(i, o) for i, o in zip(fused, out_channels)])
        self.branches = nn.LayerList()
        for i, dim in enumerate(out_channels):
            self.branches.append(
                nn.Sequential(
                    *[
                        HRViTBlock(dim, dim // head_dim, windows[i], mlp_ratios[i], drop_path_rates[j], proj_drop)
                        for j in range(depths[i])
                    ]
                )
            )
        self.norms = nn.LayerList([LayerNorm(dim) for dim in out_channels])

    def forward(self, xs: List[paddle.Tensor]) -> List[paddle.Tensor]:
        outs = []
        for x, embed, branch, norm in zip(self.fusion(xs), self.embeds, self.branches, self.norms):
            outs.append(to_nchw(norm(branch(embed(x)))))
        return outs


# ----------------------------------------------------------------------------------------------
# Backbone
# ----------------------------------------------------------------------------------------------


@BACKBONES.register
class HRViT(nn.Layer):
    """The HRViT backbone: conv stem, then six stages that grow to four branches (strides 4-32).

    Args:
        widths: branch widths at strides 4, 8, 16, 32.
        depths: blocks per branch for each stage; a stage with one more entry opens a new branch.
        head_dim: channels per attention head.
        windows: stripe width per branch.
        mlp_ratios: MixCFN expansion per branch.
        stem_channels: width after the stem.
        in_channels: image channels.
        drop_path_rate: stochastic depth, growing linearly over the blocks up to this value.
        proj_drop: dropout after the attention output linear.

    Attributes:
        out_channels: the widths of the four outputs.
        out_strides: their strides (4, 8, 16, 32).
    """

    # Pretrained weights may be an official ImageNet (head.*) or mmseg segmentation checkpoint
    # (decode_head.*, auxiliary_head.*); only the backbone's tensors are taken.
    pretrained_tolerance = Tolerance(unexpected=("head", "decode_head", "auxiliary_head"))

    def __init__(
        self,
        *,
        widths: Sequence[int] = (32, 64, 128, 256),
        depths: Sequence[Sequence[int]] = ((1,), (1, 1), (1, 1, 6), (1, 1, 6), (1, 1, 6, 2), (1, 1, 2, 2)),
        head_dim: int = 32,
        windows: Sequence[int] = (1, 2, 7, 7),
        mlp_ratios: Sequence[float] = (4, 4, 4, 4),
        stem_channels: int = 64,
        in_channels: int = 3,
        drop_path_rate: float = 0.0,
        proj_drop: float = 0.0,
    ):
        super().__init__()
        if len(widths) != 4 or len(windows) != 4 or len(mlp_ratios) != 4:
            raise ConfigError(
                f"HRViT: widths, windows and mlp_ratios need one entry per branch (4), got "
                f"{list(widths)}, {list(windows)}, {list(mlp_ratios)}."
            )
        branches = [len(d) for d in depths]
        if branches[0] != 1 or any(b not in (a, a + 1) for a, b in zip(branches, branches[1:])) or branches[-1] != 4:
            raise ConfigError(
                f"HRViT: depths must start with one branch, add at most one branch per stage and end "
                f"with four, got {[list(d) for d in depths]}."
            )
        self.out_channels = list(widths)
        self.out_strides = [4, 8, 16, 32]
        self.stem = ConvStem(in_channels, stem_channels)
        # Each stage's blocks j share one drop-path rate; the rates grow over the deepest branch.
        total = sum(max(d) for d in depths)
        rates = np.linspace(0.0, drop_path_rate, total).tolist()
        self.stages = nn.LayerList()
        current, start = [stem_channels], 0
        for stage_depths in depths:
            out = list(widths[: len(stage_depths)])
            self.stages.append(
                HRViTStage(
                    current, out, stage_depths, head_dim, windows, mlp_ratios,
                    rates[start : start + max(stage_depths)], proj_drop,
                )
            )
            current, start = out, start + max(stage_depths)
        _trunc_normal_linears(self)

    def forward(self, x: paddle.Tensor) -> List[paddle.Tensor]:
        xs = [self.stem(x)]
        for stage in self.stages:
            xs = stage(xs)
        return xs

    @staticmethod
    def remap_checkpoint_keys(state: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Official HRViT (ImageNet or mmseg ``backbone.``) keys -> this backbone's; segkit keys pass."""
        return convert_official_state_dict(state, prefix="")


# ----------------------------------------------------------------------------------------------
# Segmentation model: HRViT + the SegFormer-style all-MLP head of the official configs
# ----------------------------------------------------------------------------------------------


@MODELS.register
class HRViTSegFormer(SegFormer):
    """HRViT backbone + SegFormer-style head, the segmentation model of the official HRViT configs.

    The head is mmseg's ``SegformerHead`` with ``mlp_norm=False, mlp_act=False``: a linear layer
    with bias (1x1 conv) per level, bilinear resize to stride 4, concatenation finest first
    (c1..c4, unlike SegFormer's c4..c1), 1x1 conv + BN + ReLU, dropout, 1x1 classifier. segkit's
    ``AllMLPHead`` computes it with ``reverse_concat=False``.

    Args:
        num_classes: classes predicted.
        backbone: any segkit backbone (declaring ``out_channels``), usually ``hrvit_b1/b2/b3``.
        embedding_dim: width of the head (256 for b1/b2, 768 for b3 in the official configs).
        dropout: channel dropout before the classifier.
        align_corners: of the bilinear resizing in the head and to the input size.

    Pretrained weights are segkit or official mmseg segmentation weights; a classifier trained for
    another number of classes is left at its initial values (SegFormer's ``pretrained_tolerance``).
    """

    reverse_concat = False

    def __init__(
        self,
        *,
        num_classes: int,
        backbone: Backbone,
        embedding_dim: int = 256,
        dropout: float = 0.1,
        align_corners: bool = False,
    ):
        super().__init__(num_classes=num_classes, backbone=backbone, embedding_dim=embedding_dim,
                         align_corners=align_corners, dropout=dropout)

    def init_head(self) -> None:
        """mmseg's initialisation of the head's linear layers (before pretrained weights load)."""
        _trunc_normal_linears(self.head)

    @staticmethod
    def remap_checkpoint_keys(state: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Official mmseg HRViT checkpoints (``backbone.``, ``decode_head.``) -> segkit; segkit keys pass."""
        return convert_official_state_dict(state, prefix="backbone.")


# ----------------------------------------------------------------------------------------------
# Official checkpoint -> segkit
# ----------------------------------------------------------------------------------------------

# Official sub-module path inside a block -> (segkit path, whether the weight is a torch Linear).
_BLOCK_PARTS = {
    "attn_norm": ("attn_norm", False),
    "attn.to_qkv": ("attn.qv", True),
    "attn.to_out.0": ("attn.proj", True),
    "attn.attn_bn": ("attn.token_bn", False),
    "attn.parallel_conv.1": ("attn.local_conv", False),
    "des.proj_right": ("shortcut.right", True),
    "des.proj_left": ("shortcut.left", True),
    "ffn_norm": ("ffn_norm", False),
    "ffn.fc1": ("ffn.fc1", True),
    "ffn.conv.conv_3": ("ffn.dw3", False),
    "ffn.conv.conv_5": ("ffn.dw5", False),
    "ffn.fc2": ("ffn.fc2", True),
}
_EMBED_PARTS = {"proj.0": "pointwise", "proj.1": "depthwise", "norm": "norm"}
_DOWN_PARTS = {"0": "depthwise", "1": "depthwise_bn", "2": "pointwise", "3": "pointwise_bn"}
_UP_PARTS = {"0": "pointwise", "1": "pointwise_bn"}
_HEAD_PARTS = {"fusion_conv.conv": "fuse.conv", "fusion_conv.bn": "fuse.bn", "conv_seg": "classifier"}

_FUSION_KEY = re.compile(r"features\.(\d+)\.blocks\.(\d+)\.(\d+)\.(\d+)\.(\w+)$")
_EMBED_KEY = re.compile(r"features\.(\d+)\.patch_embed\.(\d+)\.(.+)\.(\w+)$")
_BLOCK_KEY = re.compile(r"features\.(\d+)\.branches\.(\d+)\.(\d+)\.(.+)\.(\w+)$")
_NORM_KEY = re.compile(r"features\.(\d+)\.norm\.(\d+)\.(\w+)$")
_HEAD_LEVEL_KEY = re.compile(r"convs\.(\d+)\.conv\.(\w+)$")
_HEAD_KEY = re.compile(r"(.+)\.(\w+)$")


def _stage(index: str) -> int:
    """Official ``features`` index -> segkit stage (even: that stage's fusion, odd: its branches)."""
    return int(index) // 2


def _convert_backbone_key(key: str) -> Optional[Tuple[str, bool]]:
    """One official backbone key -> (segkit key, is a Linear weight), or None if it is not one."""
    if key.startswith("stem."):
        module, _, param = key.rpartition(".")
        return f"{module}.{BN_BUFFERS.get(param, param)}", False
    match = _FUSION_KEY.match(key)
    if match:
        feature, i, j, part, param = match.groups()
        parts = _DOWN_PARTS if int(j) < int(i) else _UP_PARTS
        if part not in parts:
            return None
        name = f"stages.{_stage(feature)}.fusion.paths.{i}.{j}.{parts[part]}"
        return f"{name}.{BN_BUFFERS.get(param, param)}", False
    match = _EMBED_KEY.match(key)
    if match:
        feature, i, part, param = match.groups()
        if part not in _EMBED_PARTS:
            return None
        return f"stages.{_stage(feature)}.embeds.{i}.{_EMBED_PARTS[part]}.{param}", False
    match = _BLOCK_KEY.match(key)
    if match:
        feature, i, block, part, param = match.groups()
        if part not in _BLOCK_PARTS:
            return None
        name, is_linear = _BLOCK_PARTS[part]
        new = f"stages.{_stage(feature)}.branches.{i}.{block}.{name}.{BN_BUFFERS.get(param, param)}"
        return new, is_linear and param == "weight"
    match = _NORM_KEY.match(key)
    if match:
        feature, i, param = match.groups()
        return f"stages.{_stage(feature)}.norms.{i}.{param}", False
    return None


def _convert_head_key(key: str) -> Optional[Tuple[str, bool]]:
    """One mmseg ``SegformerHead`` key (without ``decode_head.``) -> (segkit key, is a 1x1-conv-as-linear)."""
    match = _HEAD_LEVEL_KEY.match(key)
    if match:
        level, param = match.groups()
        return f"embed.{level}.{param}", param == "weight"
    match = _HEAD_KEY.match(key)
    if match and match.group(1) in _HEAD_PARTS:
        name, param = _HEAD_PARTS[match.group(1)], match.group(2)
        return f"{name}.{BN_BUFFERS.get(param, param)}", False
    return None


def convert_official_state_dict(state: Dict[str, np.ndarray], prefix: str = "") -> Dict[str, np.ndarray]:
    """Convert an official HRViT state dict (PyTorch names and layouts) to segkit's.

    Accepts the ImageNet model's keys (``stem.*``, ``features.*``; the classifier ``head.*`` is kept
    as is, to be reported or ignored by the loader), mmseg segmentation checkpoints
    (``backbone.*``, ``decode_head.*``) and a ``module.`` prefix from distributed training. Linear
    weights are transposed to Paddle's (in, out); the head's per-level 1x1 convs become linears;
    BatchNorm ``running_mean``/``running_var`` become ``_mean``/``_variance``;
    ``num_batches_tracked`` counters are dropped. Keys that are already segkit's pass unchanged, so
    the function is safe to apply to any checkpoint. The input is not modified.

    Args:
        state: name -> array.
        prefix: where the backbone lives in the target layer: ``""`` for a bare ``HRViT``,
            ``"backbone."`` for ``HRViTSegFormer``. With ``""`` an mmseg (or segkit) segmentation
            checkpoint's backbone keys lose their ``backbone.`` prefix and its head keys become
            ``head.*``, which ``HRViT`` loads as allowed-unexpected.

    Returns:
        A new dict of segkit key -> array.
    """
    out: Dict[str, np.ndarray] = {}
    for key, value in strip_training_wrappers(state).items():
        new_key, converted = key, None
        if key.startswith("backbone."):
            inner = key[len("backbone.") :]
            new_key = prefix + inner
            converted = _convert_backbone_key(inner)
            converted = (prefix + converted[0], converted[1]) if converted else None
        elif key.startswith(("stem.", "features.")):
            converted = _convert_backbone_key(key)
            converted = (prefix + converted[0], converted[1]) if converted else None
        elif key.startswith("decode_head."):
            converted = _convert_head_key(key[len("decode_head.") :])
            converted = ("head." + converted[0], converted[1]) if converted else None
        if converted is None:
            out[new_key] = value
        else:
            out[converted[0]] = torch_linear(value) if converted[1] else value
    return out


# ----------------------------------------------------------------------------------------------
# Variants
# ----------------------------------------------------------------------------------------------

_VARIANTS = {
    "b1": dict(
        widths=(32, 64, 128, 256),
        depths=((1,), (1, 1), (1, 1, 6), (1, 1, 6), (1, 1, 6, 2), (1, 1, 2, 2)),
        head_dim=32,
        mlp_ratios=(4, 4, 4, 4),
    ),
    "b2": dict(
        widths=(48, 96, 240, 384),
        depths=((1,), (1, 1), (1, 1, 6), (1, 1, 6), (1, 1, 6, 2), (1, 1, 6, 2)),
        head_dim=24,
        mlp_ratios=(2, 3, 3, 3),
    ),
    "b3": dict(
        widths=(64, 128, 256, 512),
        depths=((1,), (1, 1), (1, 1, 6), (1, 1, 6), (1, 1, 6, 3), (1, 1, 6, 3)),
        head_dim=32,
        mlp_ratios=(2, 2, 2, 2),
    ),
}
# Head widths and drop-path rates of the official segmentation configs.
_HEAD_DIMS = {"b1": 256, "b2": 256, "b3": 768}


@BACKBONES.register(name="hrvit_b1")
def hrvit_b1_backbone(*, drop_path_rate: float = 0.0, in_channels: int = 3) -> HRViT:
    """HRViT-b1 backbone (widths 32/64/128/256), 7.76M parameters."""
    return HRViT(**_VARIANTS["b1"], drop_path_rate=drop_path_rate, in_channels=in_channels)


@BACKBONES.register(name="hrvit_b2")
def hrvit_b2_backbone(*, drop_path_rate: float = 0.0, in_channels: int = 3) -> HRViT:
    """HRViT-b2 backbone (widths 48/96/240/384)."""
    return HRViT(**_VARIANTS["b2"], drop_path_rate=drop_path_rate, in_channels=in_channels)


@BACKBONES.register(name="hrvit_b3")
def hrvit_b3_backbone(*, drop_path_rate: float = 0.0, in_channels: int = 3) -> HRViT:
    """HRViT-b3 backbone (widths 64/128/256/512)."""
    return HRViT(**_VARIANTS["b3"], drop_path_rate=drop_path_rate, in_channels=in_channels)


@MODELS.register
def hrvit_b1(*, num_classes: int, drop_path_rate: float = 0.1) -> HRViTSegFormer:
    """HRViT-b1 + SegFormer head (256), drop path 0.1 as in the ADE20K config (Cityscapes: 0.15)."""
    return HRViTSegFormer(num_classes=num_classes, backbone=hrvit_b1_backbone(drop_path_rate=drop_path_rate),
                          embedding_dim=_HEAD_DIMS["b1"])


@MODELS.register
def hrvit_b2(*, num_classes: int, drop_path_rate: float = 0.2) -> HRViTSegFormer:
    """HRViT-b2 + SegFormer head (256), drop path 0.2 as in the official configs."""
    return HRViTSegFormer(num_classes=num_classes, backbone=hrvit_b2_backbone(drop_path_rate=drop_path_rate),
                          embedding_dim=_HEAD_DIMS["b2"])


@MODELS.register
def hrvit_b3(*, num_classes: int, drop_path_rate: float = 0.3) -> HRViTSegFormer:
    """HRViT-b3 + SegFormer head (768), drop path 0.3 as in the official configs."""
    return HRViTSegFormer(num_classes=num_classes, backbone=hrvit_b3_backbone(drop_path_rate=drop_path_rate),
                          embedding_dim=_HEAD_DIMS["b3"])
