"""SegNeXt: the MSCAN encoder and the LightHamHead (Hamburger) decoder.

Paper: Meng-Hao Guo, Cheng-Ze Lu, Qibin Hou, Zheng-Ning Liu, Ming-Ming Cheng, Shi-Min Hu,
"SegNeXt: Rethinking Convolutional Attention Design for Semantic Segmentation", NeurIPS 2022
(arXiv:2209.08575). The decoder's matrix decomposition comes from Zhengyang Geng et al.,
"Is Attention Better Than Matrix Decomposition?", ICLR 2021 (arXiv:2109.04553).

Upstream: Visual-Attention-Network/SegNeXt (mmseg 0.x, Apache-2.0) and its port in
PaddlePaddle/PaddleSeg 2.8 (``paddleseg/models/segnext.py``, ``backbones/mscan.py``, Apache-2.0).
This file is written anew; the numerics follow the upstream code so that PaddleSeg, official and mmseg
1.x checkpoints give the same logits (``remap_checkpoint_keys`` converts each one's key names).

What differs from PaddleSeg 2.8:

* Layers are kept in ``stages`` (a LayerList of stem/down-sampling, blocks and norm) and the blocks run
  in NCHW throughout; PaddleSeg flattens to tokens and back in every block, which is the same math.
* ``backbone_indices`` really selects the decoder inputs (PaddleSeg always takes outputs 1..3 and only
  uses the indices for the channel counts).
* The decoder settings are plain keyword arguments of ``SegNeXt``; PaddleSeg's ``decoder_cfg`` and
  ``ham_kwargs`` dicts are translated to them (and checked: unknown keys, and keys PaddleSeg accepts
  but ignores, are errors) by ``segkit.config.paddleseg`` when a config is loaded.
* The classifier and the decoder's 1x1 convolutions start as in the official code (normal, std
  sqrt(2 / fan_out); classifier std 0.01) instead of Paddle's defaults.
* ``segnext_b`` / ``segnext_l`` use the official decoder widths (512 / 1024, NMF rank 64); PaddleSeg's
  YAML files use 256 / rank 16 for every size, which ``SegNeXt(decoder_channels=256, ham_channels=256,
  nmf_rank=16)`` builds.

In training, as upstream, the NMF bases are drawn from Paddle's global RNG on every forward pass
(``paddle.rand``, then L2-normalised); the draw order (stochastic depth per block, NMF bases, decoder
dropout) is the same as PaddleSeg's, so equal seeds give equal outputs. In eval, unlike upstream,
the bases are one fixed draw seeded by ``DEFAULT_EVAL_SEED`` (``seed_inference(model, seed)`` and
the tools' ``--seed`` choose another), so evaluation is deterministic, independent of the batch and
equal to the exported program; ``NMF.seed_eval_bases(None)`` restores upstream's per-call draw.
Gradients flow through every NMF step, as in both upstream implementations.
"""

import functools
import re
from typing import Dict, List, Optional, Sequence

import numpy as np
import paddle
import paddle.nn.functional as F
from paddle import nn

from segkit.errors import ConfigError
from segkit.models.base import Backbone, SegModel
from segkit.models.layers import (FAN_OUT, GELU, Dropout2D, LayerNorm, conv2d, drop_path, dropout_pointwise, gelu,
                                  resize_bilinear, scale_channels)
from segkit.models.upstream import backbone_part, rename_bn_buffer, strip_training_wrappers
from segkit.registry import BACKBONES, MODELS
from segkit.weights import Tolerance

__all__ = ["MSCAN", "LightHamHead", "SegNeXt", "remap_checkpoint_keys"]


# ----------------------------------------------------------------------------- initialisation


# Every convolution starts as upstream's: Normal(0, sqrt(2 / fan_out)) weights, zero bias.
_conv = functools.partial(conv2d, std=FAN_OUT)


def _channel_layer_norm(norm: nn.LayerNorm, x: paddle.Tensor) -> paddle.Tensor:
    """Apply a LayerNorm over the channels of an NCHW tensor."""
    return norm(x.transpose([0, 2, 3, 1])).transpose([0, 3, 1, 2])


# ----------------------------------------------------------------------------- MSCAN encoder


def _depthwise(dim: int, kernel: Sequence[int]) -> nn.Conv2D:
    """A depth-wise convolution with 'same' padding for an odd (kh, kw) kernel."""
    return _conv(dim, dim, tuple(kernel), groups=dim)


class MultiScaleConvAttention(nn.Layer):
    """The MSCA gate: depth-wise 5x5, plus strip-convolution pairs (1xk then kx1) on its output.

    The 5x5 output and every strip branch are summed, mixed by a 1x1 convolution and multiplied
    with the input (the attention weights).

    Args:
        dim: channels.
        strip_sizes: the k of each strip branch (the paper's 7, 11 and 21).
    """

    def __init__(self, dim: int, strip_sizes: Sequence[int] = (7, 11, 21)):
        super().__init__()
        self.local = _depthwise(dim, (5, 5))
        self.strips = nn.LayerList([nn.Sequential(_depthwise(dim, (1, k)), _depthwise(dim, (k, 1))) for k in strip_sizes])
        self.mix = _conv(dim, dim, 1)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        attn = self.local(x)
        attn = attn + sum(strip(attn) for strip in self.strips)
        return self.mix(attn) * x


class ConvAttention(nn.Layer):
    """1x1 projection, GELU, the MSCA gate, 1x1 projection, plus a shortcut around all of it.

    Args:
        dim: channels.
        strip_sizes: strip-convolution lengths of the gate.
    """

    def __init__(self, dim: int, strip_sizes: Sequence[int]):
        super().__init__()
        self.proj_in = _conv(dim, dim, 1)
        self.msca = MultiScaleConvAttention(dim, strip_sizes)
        self.proj_out = _conv(dim, dim, 1)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.proj_out(self.msca(gelu(self.proj_in(x)))) + x


class ConvMlp(nn.Layer):
    """1x1 expansion, depth-wise 3x3, GELU, 1x1 projection (the MSCAN feed-forward network).

    Args:
        dim: input and output channels.
        hidden: expanded channels.
        dropout: dropout after the activation and after the projection.
    """

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0):
        super().__init__()
        self.fc1 = _conv(dim, hidden, 1)
        self.dw = _depthwise(hidden, (3, 3))
        self.fc2 = _conv(hidden, dim, 1)
        self.dropout = dropout

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        x = gelu(self.dw(self.fc1(x)))
        x = F.dropout(x, self.dropout, training=self.training)
        return F.dropout(self.fc2(x), self.dropout, training=self.training)


class MSCABlock(nn.Layer):
    """One MSCAN block: BN, convolutional attention, layer scale; BN, MLP, layer scale; both residual.

    Args:
        dim: channels.
        mlp_ratio: hidden width of the MLP over ``dim``.
        strip_sizes: strip-convolution lengths of the attention.
        dropout: MLP dropout.
        drop_path_rate: stochastic-depth rate of both residual branches.
        layer_scale: initial value of the per-channel branch scales.
    """

    def __init__(self, dim: int, mlp_ratio: float, strip_sizes: Sequence[int], dropout: float = 0.0,
                 drop_path_rate: float = 0.0, layer_scale: float = 1e-2):
        super().__init__()
        self.attn_norm = nn.BatchNorm2D(dim)
        self.attn = ConvAttention(dim, strip_sizes)
        self.mlp_norm = nn.BatchNorm2D(dim)
        self.mlp = ConvMlp(dim, int(dim * mlp_ratio), dropout)
        scale = nn.initializer.Constant(layer_scale)
        self.attn_scale = self.create_parameter([dim, 1, 1], default_initializer=scale)
        self.mlp_scale = self.create_parameter([dim, 1, 1], default_initializer=scale)
        self.drop_path_rate = float(drop_path_rate)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        attn = scale_channels(self.attn(self.attn_norm(x)), self.attn_scale)
        x = x + drop_path(attn, self.drop_path_rate, self.training)
        mlp = scale_channels(self.mlp(self.mlp_norm(x)), self.mlp_scale)
        return x + drop_path(mlp, self.drop_path_rate, self.training)


def _stem(in_channels: int, dim: int) -> nn.Sequential:
    """Two 3x3 stride-2 convolutions with BN (GELU between): stride 4, ``dim // 2`` then ``dim`` channels."""
    return nn.Sequential(
        _conv(in_channels, dim // 2, 3, stride=2),
        nn.BatchNorm2D(dim // 2),
        GELU(),
        _conv(dim // 2, dim, 3, stride=2),
        nn.BatchNorm2D(dim),
    )


class Downsample(nn.Layer):
    """3x3 stride-2 convolution and BN between stages.

    Args:
        in_channels: channels of the previous stage.
        out_channels: channels of the next stage.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.proj = _conv(in_channels, out_channels, 3, stride=2)
        self.norm = nn.BatchNorm2D(out_channels)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.norm(self.proj(x))


class MSCANStage(nn.Layer):
    """Down-sampling (the stem for the first stage), MSCA blocks, then a LayerNorm over channels.

    Args:
        embed: the down-sampling layer in front of the blocks.
        blocks: the stage's blocks, applied in order.
        dim: channels of the stage.
    """

    def __init__(self, embed: nn.Layer, blocks: List[MSCABlock], dim: int):
        super().__init__()
        self.embed = embed
        self.blocks = nn.Sequential(*blocks)
        self.norm = LayerNorm(dim)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return _channel_layer_norm(self.norm, self.blocks(self.embed(x)))


@BACKBONES.register
class MSCAN(nn.Layer):
    """Multi-scale convolutional attention network: four stages at strides 4, 8, 16, 32.

    Args:
        in_channels: image channels.
        embed_dims: channels of each stage.
        depths: blocks per stage.
        mlp_ratios: MLP expansion per stage.
        atten_kernel_sizes: strip-convolution lengths of the attention (PaddleSeg's name).
        drop_rate: MLP dropout.
        drop_path_rate: stochastic-depth rate of the last block (rising linearly from 0).
    """

    # Pretrained (ImageNet) weights carry a classification head, which a backbone does not have.
    pretrained_tolerance = Tolerance(unexpected=("head",))

    def __init__(self, *, in_channels: int = 3, embed_dims: Sequence[int] = (32, 64, 160, 256),
                 depths: Sequence[int] = (3, 3, 5, 2), mlp_ratios: Sequence[float] = (8, 8, 4, 4),
                 atten_kernel_sizes: Sequence[int] = (7, 11, 21), drop_rate: float = 0.0,
                 drop_path_rate: float = 0.1):
        super().__init__()
        if not len(embed_dims) == len(depths) == len(mlp_ratios):
            raise ConfigError(
                f"MSCAN: embed_dims {list(embed_dims)}, depths {list(depths)} and mlp_ratios "
                f"{list(mlp_ratios)} must have one entry per stage (the same length)."
            )
        if any(k % 2 == 0 for k in atten_kernel_sizes):
            raise ConfigError(f"MSCAN: atten_kernel_sizes must be odd, got {list(atten_kernel_sizes)}.")
        rates = np.linspace(0, drop_path_rate, sum(depths)).tolist()
        stages, start = [], 0
        for i, (dim, depth, ratio) in enumerate(zip(embed_dims, depths, mlp_ratios)):
            embed = _stem(in_channels, dim) if i == 0 else Downsample(embed_dims[i - 1], dim)
            blocks = [MSCABlock(dim, ratio, atten_kernel_sizes, drop_rate, rates[start + j]) for j in range(depth)]
            stages.append(MSCANStage(embed, blocks, dim))
            start += depth
        self.stages = nn.LayerList(stages)
        self.out_channels: List[int] = list(embed_dims)
        self.out_strides: List[int] = [4 * 2**i for i in range(len(embed_dims))]

    @staticmethod
    def remap_checkpoint_keys(state: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Upstream MSCAN keys -> segkit keys (see the module-level ``remap_checkpoint_keys``).

        A whole SegNeXt checkpoint loses its ``backbone.`` prefix and its decoder comes out under
        ``head.``, which the backbone drops like an ImageNet classifier.
        """
        return backbone_part(remap_checkpoint_keys(state))

    def forward(self, x: paddle.Tensor) -> List[paddle.Tensor]:
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return outs


# The four sizes: MSCAN's keyword arguments with the depths and widths fixed.


@BACKBONES.register
def mscan_t(*, in_channels: int = 3, mlp_ratios: Sequence[float] = (8, 8, 4, 4),
            atten_kernel_sizes: Sequence[int] = (7, 11, 21), drop_rate: float = 0.0,
            drop_path_rate: float = 0.1) -> MSCAN:
    """MSCAN-T: channels 32 / 64 / 160 / 256, depths 3 / 3 / 5 / 2 (other arguments as MSCAN)."""
    return MSCAN(in_channels=in_channels, embed_dims=(32, 64, 160, 256), depths=(3, 3, 5, 2), mlp_ratios=mlp_ratios,
                 atten_kernel_sizes=atten_kernel_sizes, drop_rate=drop_rate, drop_path_rate=drop_path_rate)


@BACKBONES.register
def mscan_s(*, in_channels: int = 3, mlp_ratios: Sequence[float] = (8, 8, 4, 4),
            atten_kernel_sizes: Sequence[int] = (7, 11, 21), drop_rate: float = 0.0,
            drop_path_rate: float = 0.1) -> MSCAN:
    """MSCAN-S: channels 64 / 128 / 320 / 512, depths 2 / 2 / 4 / 2 (other arguments as MSCAN)."""
    return MSCAN(in_channels=in_channels, embed_dims=(64, 128, 320, 512), depths=(2, 2, 4, 2), mlp_ratios=mlp_ratios,
                 atten_kernel_sizes=atten_kernel_sizes, drop_rate=drop_rate, drop_path_rate=drop_path_rate)


@BACKBONES.register
def mscan_b(*, in_channels: int = 3, mlp_ratios: Sequence[float] = (8, 8, 4, 4),
            atten_kernel_sizes: Sequence[int] = (7, 11, 21), drop_rate: float = 0.0,
            drop_path_rate: float = 0.1) -> MSCAN:
    """MSCAN-B: channels 64 / 128 / 320 / 512, depths 3 / 3 / 12 / 3 (other arguments as MSCAN)."""
    return MSCAN(in_channels=in_channels, embed_dims=(64, 128, 320, 512), depths=(3, 3, 12, 3), mlp_ratios=mlp_ratios,
                 atten_kernel_sizes=atten_kernel_sizes, drop_rate=drop_rate, drop_path_rate=drop_path_rate)


@BACKBONES.register
def mscan_l(*, in_channels: int = 3, mlp_ratios: Sequence[float] = (8, 8, 4, 4),
            atten_kernel_sizes: Sequence[int] = (7, 11, 21), drop_rate: float = 0.0,
            drop_path_rate: float = 0.3) -> MSCAN:
    """MSCAN-L: channels 64 / 128 / 320 / 512, depths 3 / 5 / 27 / 3, drop path 0.3 (other arguments as MSCAN)."""
    return MSCAN(in_channels=in_channels, embed_dims=(64, 128, 320, 512), depths=(3, 5, 27, 3), mlp_ratios=mlp_ratios,
                 atten_kernel_sizes=atten_kernel_sizes, drop_rate=drop_rate, drop_path_rate=drop_path_rate)


# ----------------------------------------------------------------------------- Hamburger decoder

# The seed of the NMF bases in eval and in exported programs unless ``seed_inference`` sets another.
DEFAULT_EVAL_SEED = 0


class NMF(nn.Layer):
    """Non-negative matrix factorisation of a feature map by multiplicative updates.

    The map (N, C, H, W) is viewed as ``groups`` matrices X of D x HW (D = C / groups, or HW x D when
    ``spatial`` is False) and factorised X ~ B C^T with rank-``rank`` bases B, which start as a fresh
    ``paddle.rand`` draw normalised over D on every call. C starts as softmax(X^T B), then B and C take
    ``train_steps`` (training) or ``eval_steps`` (eval) multiplicative updates, C one more; the output
    is the low-rank reconstruction B C^T.

    Args:
        rank: number of bases R.
        groups: number of independent factorisations S along the channels.
        spatial: factorise channels x positions (True) or positions x channels.
        train_steps: updates in training.
        eval_steps: updates in eval.
    """

    eps = 1e-6

    def __init__(self, rank: int = 64, groups: int = 1, spatial: bool = True, train_steps: int = 6, eval_steps: int = 7,
                 channels: Optional[int] = None):
        super().__init__()
        self.rank = rank
        self.groups = groups
        self.spatial = spatial
        self.train_steps = train_steps
        self.eval_steps = eval_steps
        self.channels = channels
        self.eval_seed: Optional[int] = None
        self.register_buffer("eval_bases", None, persistable=False)  # not part of checkpoints: it follows the seed
        self.seed_eval_bases(DEFAULT_EVAL_SEED)

    def seed_eval_bases(self, seed: Optional[int]) -> None:
        """Fix the bases used in eval to one draw seeded by ``seed``; None draws them on every call (upstream).

        The draw is NumPy's ``default_rng(seed).random`` (uniform [0, 1), float32) of shape
        (groups, D, rank), L2-normalised over D, shared by every sample of a batch: the same numbers
        on every device, in dygraph and in an exported program, whatever the batch. Training always
        draws fresh bases from Paddle's RNG, as the paper does. Without ``channels`` (D unknown) or
        with ``spatial`` False (D = H * W) the bases are drawn at the first eval call for its D.
        """
        self.eval_seed = seed
        self.eval_bases = None
        if seed is not None and self.spatial and self.channels:
            self.eval_bases = self._seeded_bases(self.channels // self.groups)

    def _seeded_bases(self, d: int) -> paddle.Tensor:
        bases = np.random.default_rng(self.eval_seed).random((self.groups, d, self.rank), dtype=np.float32)
        bases /= np.maximum(np.linalg.norm(bases, axis=1, keepdims=True), 1e-12)
        return paddle.to_tensor(bases)

    def _initial_bases(self, n, d) -> paddle.Tensor:
        """The starting bases for ``n`` samples: a fresh draw (training, or no eval seed), else the seeded ones."""
        if self.training or self.eval_seed is None:
            return F.normalize(paddle.rand([n * self.groups, d, self.rank]), axis=1)
        bases = self.eval_bases
        if bases is None or bases.shape[1] != d:
            if not isinstance(d, int):
                raise ConfigError("NMF with SPATIAL False: the fixed eval bases depend on the image size (D = H * W); "
                                  "export it with a fixed height and width, e.g. --input_shape -1 3 512 512.")
            bases = self.eval_bases = self._seeded_bases(d)
        return paddle.tile(bases, [n, 1, 1])

    def _update_coef(self, x, bases, coef):
        numerator = paddle.bmm(x.transpose([0, 2, 1]), bases)
        denominator = coef.bmm(bases.transpose([0, 2, 1]).bmm(bases))
        return coef * numerator / (denominator + self.eps)

    def _update_bases(self, x, bases, coef):
        numerator = paddle.bmm(x, coef)
        denominator = bases.bmm(coef.transpose([0, 2, 1]).bmm(coef))
        return bases * numerator / (denominator + self.eps)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        # The multiplicative updates divide by sums that underflow in float16 (eps 1e-6 included),
        # so the factorisation always runs in float32, also under mixed precision.
        with paddle.amp.auto_cast(enable=False):
            return self._factorise(x.astype("float32")).astype(x.dtype)

    def _factorise(self, x: paddle.Tensor) -> paddle.Tensor:
        n, c, h, w = x.shape
        if self.spatial:
            d = c // self.groups
            x = x.reshape([n * self.groups, d, h * w])
        else:
            d = h * w
            x = x.reshape([n * self.groups, c // self.groups, d]).transpose([0, 2, 1])
        bases = self._initial_bases(n, d)
        coef = F.softmax(paddle.bmm(x.transpose([0, 2, 1]), bases), axis=-1)
        for _ in range(self.train_steps if self.training else self.eval_steps):
            coef = self._update_coef(x, bases, coef)
            bases = self._update_bases(x, bases, coef)
        coef = self._update_coef(x, bases, coef)
        x = paddle.bmm(bases, coef.transpose([0, 2, 1]))
        if not self.spatial:
            x = x.transpose([0, 2, 1])
        return x.reshape([n, c, h, w])


def _conv_gn(in_channels: int, out_channels: int, groups: int, relu: bool) -> nn.Sequential:
    """1x1 convolution without bias, GroupNorm, and optionally ReLU."""
    layers = [_conv(in_channels, out_channels, 1, bias=False), nn.GroupNorm(groups, out_channels)]
    return nn.Sequential(*layers, nn.ReLU()) if relu else nn.Sequential(*layers)


class Hamburger(nn.Layer):
    """1x1 convolution and ReLU, NMF, 1x1 convolution and GroupNorm, added to the input, ReLU.

    Args:
        channels: input and output channels.
        num_groups: GroupNorm groups.
        nmf: the matrix decomposition.
    """

    def __init__(self, channels: int, num_groups: int, nmf: NMF):
        super().__init__()
        self.proj_in = _conv(channels, channels, 1)
        self.nmf = nmf
        self.proj_out = _conv_gn(channels, channels, num_groups, relu=False)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return F.relu(x + self.proj_out(self.nmf(F.relu(self.proj_in(x)))))


class LightHamHead(nn.Layer):
    """The SegNeXt decoder: resize to the first input's size, concatenate, squeeze, Hamburger, align, classify.

    Args:
        in_channels: channels of the inputs (backbone stages 2-4 in SegNeXt).
        num_classes: classes predicted.
        nmf: the Hamburger's matrix decomposition (over ``ham_channels`` channels).
        channels: width after the align convolution.
        dropout_rate: channel dropout before the classifier.
        align_corners: for resizing the inputs.
        ham_channels: width of the squeeze convolution and the Hamburger.
        num_groups: GroupNorm groups.
    """

    def __init__(self, *, in_channels: Sequence[int], num_classes: int, nmf: NMF, channels: int = 256,
                 dropout_rate: float = 0.1, align_corners: bool = False, ham_channels: int = 512, num_groups: int = 32):
        super().__init__()
        self.align_corners = align_corners
        self.squeeze = _conv_gn(sum(in_channels), ham_channels, num_groups, relu=True)
        self.ham = Hamburger(ham_channels, num_groups, nmf)
        self.align = _conv_gn(ham_channels, channels, num_groups, relu=True)
        self.dropout = Dropout2D(dropout_rate) if dropout_rate > 0 else nn.Identity()
        self.classifier = conv2d(channels, num_classes, 1, std=0.01)

    def forward(self, feats: List[paddle.Tensor]) -> paddle.Tensor:
        # The first input is the finest; the others are always resized to it (a same-size bilinear
        # resize is exact), so the program has no size comparison and exports with a dynamic size.
        size = paddle.shape(feats[0])[2:]
        feats = feats[:1] + [resize_bilinear(f, size, self.align_corners)
                             for f in feats[1:]]
        x = self.ham(self.squeeze(paddle.concat(feats, axis=1)))
        return dropout_pointwise(self.align(x), self.dropout, self.classifier)


def _check_head_widths(decoder_channels: int, ham_channels: int, num_groups: int, nmf_groups: int) -> None:
    """Refuse decoder widths that GroupNorm or the NMF groups cannot split evenly."""
    for name, width in (("decoder_channels", decoder_channels), ("ham_channels", ham_channels)):
        if width % num_groups:
            raise ConfigError(f"{name} {width} is not divisible by num_groups {num_groups}.")
    if ham_channels % nmf_groups:
        raise ConfigError(f"ham_channels {ham_channels} is not divisible by nmf_groups {nmf_groups}.")


@MODELS.register
class SegNeXt(SegModel):
    """SegNeXt: an MSCAN backbone and the LightHamHead, logits resized to the input.

    Args:
        num_classes: classes predicted.
        backbone: the encoder (an MSCAN or anything declaring ``out_channels``).
        backbone_indices: which backbone outputs feed the decoder; the first sets its resolution.
        decoder_channels: width of the decoder after the Hamburger (PaddleSeg ``channels``).
        ham_channels: width of the squeeze convolution and the Hamburger.
        num_groups: GroupNorm groups of the decoder.
        dropout_rate: channel dropout before the classifier.
        align_corners: of the decoder's and the output's bilinear resizes.
        nmf_rank: NMF bases R (PaddleSeg ``MD_R``).
        nmf_groups: independent factorisations along the channels (``MD_S``).
        nmf_spatial: factorise channels x positions, else positions x channels (``SPATIAL``).
        nmf_train_steps: NMF updates in training (``TRAIN_STEPS``).
        nmf_eval_steps: NMF updates in eval (``EVAL_STEPS``).
    """

    num_outputs = 1
    # Pretrained whole-model weights may have a classifier of another shape (left at its initial values).
    pretrained_tolerance = Tolerance(shape_mismatch=("head.classifier",))

    def __init__(self, *, num_classes: int, backbone: Backbone, backbone_indices: Sequence[int] = (1, 2, 3),
                 decoder_channels: int = 256, ham_channels: int = 512, num_groups: int = 32,
                 dropout_rate: float = 0.1, align_corners: bool = False, nmf_rank: int = 64, nmf_groups: int = 1,
                 nmf_spatial: bool = True, nmf_train_steps: int = 6, nmf_eval_steps: int = 7):
        super().__init__()
        n_out = len(backbone.out_channels)
        bad = [i for i in backbone_indices if not -n_out <= i < n_out]
        if bad or not backbone_indices:
            raise ConfigError(f"backbone_indices {list(backbone_indices)}: the backbone has {n_out} outputs "
                              f"(indices 0..{n_out - 1}).")
        _check_head_widths(decoder_channels, ham_channels, num_groups, nmf_groups)
        self.num_classes = num_classes
        self.backbone = backbone
        self.backbone_indices = list(backbone_indices)
        nmf = NMF(rank=nmf_rank, groups=nmf_groups, spatial=nmf_spatial, train_steps=nmf_train_steps,
                  eval_steps=nmf_eval_steps, channels=ham_channels)
        self.head = LightHamHead(in_channels=[backbone.out_channels[i] for i in self.backbone_indices],
                                 num_classes=num_classes, nmf=nmf, channels=decoder_channels, dropout_rate=dropout_rate,
                                 align_corners=align_corners, ham_channels=ham_channels, num_groups=num_groups)
        self.output_align_corners = align_corners

    @staticmethod
    def remap_checkpoint_keys(state: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """PaddleSeg SegNeXt keys -> segkit keys (see the module-level ``remap_checkpoint_keys``)."""
        return remap_checkpoint_keys(state)

    def forward(self, x: paddle.Tensor):
        feats = self.backbone(x)
        logits = self.head([feats[i] for i in self.backbone_indices])
        return self.outputs([self.resize_output(logits, x.shape[2:])])


# ----------------------------------------------------------------------------- checkpoint keys

_BLOCK_PARTS = [
    # Upstream name inside ``block{k}.{j}.``  ->  segkit name inside ``stages.{k-1}.blocks.{j}.``
    # (PaddleSeg, the official code and mmseg 1.x agree apart from the lines marked).
    ("norm1.", "attn_norm."),
    ("norm2.", "mlp_norm."),
    ("layer_scale_1", "attn_scale"),
    ("layer_scale_2", "mlp_scale"),
    ("attn.proj_1.", "attn.proj_in."),
    ("attn.proj_2.", "attn.proj_out."),
    ("attn.spatial_gating_unit.conv0.", "attn.msca.local."),
    ("attn.spatial_gating_unit.conv_out.", "attn.msca.mix."),  # PaddleSeg
    ("attn.spatial_gating_unit.conv3.", "attn.msca.mix."),  # official, mmseg
    ("mlp.dwconv.dwconv.", "mlp.dw."),  # official
    ("mlp.dwconv.", "mlp.dw."),  # PaddleSeg, mmseg
]
# Strip convolutions: PaddleSeg ``dwconvs.{i}.conv{i+1}_{1|2}``, official and mmseg ``conv{i}_{1|2}``.
_STRIP = re.compile(r"attn\.spatial_gating_unit\.(?:dwconvs\.(\d+)\.conv\d+|conv(\d+))_([12])\.")
_HEAD_PARTS = [
    # the official code and mmseg 1.x (mmcv ConvModule: ``conv``, ``gn``)
    ("decode_head.squeeze.conv.", "head.squeeze.0."),
    ("decode_head.squeeze.gn.", "head.squeeze.1."),
    ("decode_head.hamburger.ham_in.conv.", "head.ham.proj_in."),
    ("decode_head.hamburger.ham_out.conv.", "head.ham.proj_out.0."),
    ("decode_head.hamburger.ham_out.gn.", "head.ham.proj_out.1."),
    ("decode_head.align.conv.", "head.align.0."),
    ("decode_head.align.gn.", "head.align.1."),
    # PaddleSeg (after the official names: ``ham_in.`` is a prefix of ``ham_in.conv.``)
    ("decode_head.squeeze._conv.", "head.squeeze.0."),
    ("decode_head.squeeze._group_norm.", "head.squeeze.1."),
    ("decode_head.hamburger.ham_in.", "head.ham.proj_in."),
    ("decode_head.hamburger.ham_out._conv.", "head.ham.proj_out.0."),
    ("decode_head.hamburger.ham_out._group_norm.", "head.ham.proj_out.1."),
    ("decode_head.align._conv.", "head.align.0."),
    ("decode_head.align._group_norm.", "head.align.1."),
    ("decode_head.conv_seg.", "head.classifier."),
]
_BACKBONE_KEY = re.compile(r"^(backbone\.)?(patch_embed|block|norm)(\d+)\.(.*)$")


def _remap_backbone_part(kind: str, stage: int, rest: str) -> str:
    if kind == "norm":
        return f"stages.{stage}.norm.{rest}"
    if kind == "patch_embed":
        # The stem is ``patch_embed1.proj`` (a Sequential); later stages have ``proj`` and ``norm``.
        return f"stages.0.embed.{rest[len('proj.'):]}" if stage == 0 else f"stages.{stage}.embed.{rest}"
    block, _, part = rest.partition(".")
    strip = _STRIP.match(part)
    if strip:
        branch = strip.group(1) or strip.group(2)
        part = f"attn.msca.strips.{branch}.{int(strip.group(3)) - 1}." + part[strip.end():]
    for old, new in _BLOCK_PARTS:
        if part.startswith(old):
            part = new + part[len(old):]
            break
    return f"stages.{stage}.blocks.{block}.{part}"


def detect_segnext_format(state: Dict[str, np.ndarray]) -> str:
    """Which codebase wrote a SegNeXt / MSCAN state dict: ``official`` or ``paddleseg``.

    The official Visual-Attention-Network/SegNeXt code and mmseg 1.x write the same names and
    layouts (``official``): PyTorch BatchNorm statistics (``running_mean``), ``conv0_1``-style strip
    convolutions and mmcv ``ConvModule`` heads. PaddleSeg (and segkit's own names) otherwise.
    """
    official = ("running_mean", "num_batches_tracked", "spatial_gating_unit.conv3.weight", "squeeze.conv.weight")
    return "official" if any(k.endswith(official) for k in state) else "paddleseg"


def remap_checkpoint_keys(state: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Rename any published SegNeXt / MSCAN checkpoint's keys to segkit's; segkit keys pass unchanged.

    Reads PaddleSeg files and the official Visual-Attention-Network/SegNeXt and mmseg 1.x ones
    (ImageNet ``mscan_*`` backbones and ``segnext_mscan-*`` models):
    ``backbone.block{k}.{j}.attn.proj_1.weight`` becomes ``backbone.stages.{k-1}.blocks.{j}.attn.proj_in.weight``,
    ``decode_head.conv_seg.weight`` becomes ``head.classifier.weight``, and so on; keys with or without
    the ``backbone.`` prefix are handled, so the same function serves whole models and backbones.
    PyTorch layouts become Paddle's: BatchNorm ``running_mean`` / ``running_var`` are renamed, the
    layer scales (C,) become (C, 1, 1), ``module.`` prefixes and ``num_batches_tracked`` counters are
    dropped. Pure: returns a new dict.
    """
    out = {}
    for key, value in strip_training_wrappers(state).items():
        key = rename_bn_buffer(key)
        if key.endswith(("layer_scale_1", "layer_scale_2")) and np.ndim(value) == 1:
            value = value.reshape(-1, 1, 1)
        new = key
        match = _BACKBONE_KEY.match(key)
        if match:
            prefix, kind, number, rest = match.groups()
            new = (prefix or "") + _remap_backbone_part(kind, int(number) - 1, rest)
        else:
            for old, replacement in _HEAD_PARTS:
                if key.startswith(old):
                    new = replacement + key[len(old):]
                    break
        out[new] = value
    return out


# ----------------------------------------------------------------------------- variants


def _segnext(backbone: nn.Layer, num_classes: int, width: int, rank: int) -> SegNeXt:
    return SegNeXt(num_classes=num_classes, backbone=backbone, decoder_channels=width, ham_channels=width,
                   nmf_rank=rank)


@MODELS.register
def segnext_t(*, num_classes: int) -> SegNeXt:
    """SegNeXt-T: MSCAN-T, decoder 256 / 256, NMF rank 16 (official and PaddleSeg settings)."""
    return _segnext(mscan_t(), num_classes, 256, 16)


@MODELS.register
def segnext_s(*, num_classes: int) -> SegNeXt:
    """SegNeXt-S: MSCAN-S, decoder 256 / 256, NMF rank 16 (official and PaddleSeg settings)."""
    return _segnext(mscan_s(), num_classes, 256, 16)


@MODELS.register
def segnext_b(*, num_classes: int) -> SegNeXt:
    """SegNeXt-B: MSCAN-B, official decoder 512 / 512, NMF rank 64 (PaddleSeg's YAML uses 256 / 16)."""
    return _segnext(mscan_b(), num_classes, 512, 64)


@MODELS.register
def segnext_l(*, num_classes: int) -> SegNeXt:
    """SegNeXt-L: MSCAN-L, official decoder 1024 / 1024, NMF rank 64 (PaddleSeg's YAML uses 256 / 16)."""
    return _segnext(mscan_l(), num_classes, 1024, 64)
