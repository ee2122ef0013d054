"""SegFormer: Mix Transformer (MiT) encoder and All-MLP decoder, variants B0 to B5.

Paper: Xie et al., "SegFormer: Simple and Efficient Design for Semantic Segmentation with
Transformers", NeurIPS 2021 (arXiv:2105.15203).
Upstream: NVlabs/SegFormer (NVIDIA Source Code License, non-commercial) and its PaddlePaddle port
in PaddlePaddle/PaddleSeg ``paddleseg/models/segformer.py`` and
``paddleseg/models/backbones/mix_transformer.py`` (Apache-2.0 file header, code derived from
NVlabs/SegFormer, so the NVIDIA licence terms apply to the architecture's published weights).
This file is written anew; it reads PaddleSeg 2.8.0 only for what its published weights expect.

What differs from PaddleSeg:

* Stages live in one ``LayerList`` of ``MiTStage`` (patch embedding, blocks, norm); upstream names
  (``patch_embed1``, ``block1.0``, ``norm1``, ``linear_c4``, ``linear_fuse._conv``, ...) are
  translated once by the pure functions at the end of this file, which ``segkit.weights.apply_weights``
  applies: ``convert_segformer_checkpoint`` recognises NVlabs, Hugging Face, mmseg 1.x and PaddleSeg
  files (``detect_segformer_format``) and converts their names and layouts, so they load unchanged.
* ``mmseg_head=True`` builds mmseg 1.x's ``SegformerHead`` (conv, BatchNorm, ReLU per level) for
  mmseg's checkpoints; the default is the paper's decoder (NVlabs, PaddleSeg, Hugging Face).
* The decoder is a reusable ``AllMLPHead`` that takes its input widths from the backbone's
  ``out_channels``, so any backbone (HRViT, say) plugs into ``SegFormer``.
* The decoder computes the same function with fewer operations: its fusion 1x1 conv is linear and
  acts per pixel, and bilinear resizing is linear and acts per channel with weights summing to 1,
  so ``fuse(concat(resize(linear_i(c_i))))`` equals ``sum_i resize(folded_i(c_i))`` where
  ``folded_i`` is the product of level ``i``'s linear layer and its slice of the fusion weight.
  Each level is then mapped to the decoder width at its own resolution and the 4E -> E conv at
  stride 4 (about half of B0's multiply-adds) disappears. Parameters, checkpoints and outputs
  (up to float rounding) are the same as upstream's.
* Attention uses ``scaled_dot_product_attention`` on [B, N, heads, dim] tensors (no transposes)
  and Python-int shapes rather than ``paddle.shape`` tensors.
* MixFFN keeps its hidden map channels-first (fc1 computed transposed, fc2 reading it transposed),
  so the wide map is never transposed; linears and biases add their bias gradient by a matrix
  product in training (``layers.Linear``, ``add_bias``). Same parameters and function.
"""

import math
import re
from typing import Dict, List, Sequence, Tuple

import numpy as np
import paddle
import paddle.nn.functional as F
from paddle import nn

from segkit.errors import CheckpointError, ConfigError
from segkit.models.base import Backbone, SegModel
from segkit.models.layers import (GELU, Conv2D, Dropout2D, DropPath, LayerNorm, Linear, add_all, add_bias,
                                  add_channel_bias, attention, conv2d_nchw, dropout_pointwise, resize_bilinear)
from segkit.models.upstream import backbone_part, rename_bn_buffer, strip_training_wrappers, torch_linear
from segkit.registry import BACKBONES, MODELS
from segkit.weights import Tolerance

# Layer norms inside blocks and at the end of each stage use 1e-6 (upstream's ``norm_layer``);
# the patch-embedding and spatial-reduction norms keep Paddle's default 1e-5, as upstream does.
BLOCK_LN_EPS = 1e-6
DEFAULT_LN_EPS = 1e-5

_trunc_normal = nn.initializer.TruncatedNormal(std=0.02)
_zeros = nn.initializer.Constant(0.0)
_ones = nn.initializer.Constant(1.0)


def init_mit_weights(layer: nn.Layer) -> None:
    """Upstream's initialisation: truncated normal linears, He-style convs (fan-out), unit norms."""
    if isinstance(layer, nn.Linear):
        _trunc_normal(layer.weight)
        if layer.bias is not None:
            _zeros(layer.bias)
    elif isinstance(layer, nn.LayerNorm):
        _ones(layer.weight)
        _zeros(layer.bias)
    elif isinstance(layer, nn.Conv2D):
        kh, kw = layer._kernel_size
        fan_out = kh * kw * layer._out_channels // layer._groups
        nn.initializer.Normal(0.0, math.sqrt(2.0 / fan_out))(layer.weight)
        if layer.bias is not None:
            _zeros(layer.bias)


# ----------------------------------------------------------------------------------------------
# Encoder building blocks
# ----------------------------------------------------------------------------------------------


class OverlapPatchEmbed(nn.Layer):
    """Strided conv whose kernel overlaps neighbouring patches, then LayerNorm over channels.

    Args:
        in_channels: input width.
        embed_dim: output width.
        kernel_size: conv kernel (7 for the first stage, 3 after).
        stride: conv stride (4 for the first stage, 2 after).
    """

    def __init__(self, in_channels: int, embed_dim: int, kernel_size: int, stride: int):
        super().__init__()
        self.proj = Conv2D(in_channels, embed_dim, kernel_size, stride=stride, padding=kernel_size // 2)
        self.norm = LayerNorm(embed_dim, epsilon=DEFAULT_LN_EPS)

    def forward(self, x: paddle.Tensor) -> Tuple[paddle.Tensor, int, int]:
        """NCHW image/features -> tokens [B, H*W, C] and the token grid's (H, W)."""
        x = self.proj(x)
        _, _, h, w = x.shape
        return self.norm(x.flatten(2).transpose([0, 2, 1])), h, w


class EfficientSelfAttention(nn.Layer):
    """Multi-head attention whose keys/values come from a grid shrunk ``sr_ratio`` times per side.

    Args:
        dim: token width.
        num_heads: attention heads; must divide ``dim``.
        sr_ratio: spatial reduction of the key/value grid (a strided conv + LayerNorm when > 1).
        qkv_bias: whether the query and key/value projections have a bias.
        attn_drop: dropout on the attention weights.
        proj_drop: dropout after the output projection.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        sr_ratio: int,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ):
        super().__init__()
        if dim % num_heads:
            raise ConfigError(f"attention width {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.sr_ratio = sr_ratio
        self.attn_drop = attn_drop
        self.q = Linear(dim, dim, bias_attr=None if qkv_bias else False)
        self.kv = Linear(dim, 2 * dim, bias_attr=None if qkv_bias else False)
        self.proj = Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        if sr_ratio > 1:
            self.sr = Conv2D(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
            self.sr_norm = LayerNorm(dim, epsilon=DEFAULT_LN_EPS)

    def forward(self, x: paddle.Tensor, h: int, w: int) -> paddle.Tensor:
        b, n, c = x.shape
        q = self.q(x).reshape([b, n, self.num_heads, self.head_dim])
        if self.sr_ratio > 1:
            grid = x.transpose([0, 2, 1]).reshape([b, c, h, w])
            x = self.sr_norm(self.sr(grid).flatten(2).transpose([0, 2, 1]))
        k, v = self.kv(x).reshape([b, -1, 2, self.num_heads, self.head_dim]).unbind(axis=2)
        out = attention(q, k, v, dropout_p=self.attn_drop, training=self.training)
        return self.proj_drop(self.proj(out.reshape([b, n, c])))


class MixFFN(nn.Layer):
    """Feed-forward with a depthwise 3x3 conv between the two linears (gives positional cues).

    Args:
        dim: token width.
        hidden_dim: width of the hidden layer.
        drop: dropout after the activation and after the output linear.
    """

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = Linear(dim, hidden_dim)
        self.dwconv = Conv2D(hidden_dim, hidden_dim, 3, padding=1, groups=hidden_dim)
        self.act = GELU()
        self.fc2 = Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: paddle.Tensor, h: int, w: int) -> paddle.Tensor:
        """Tokens [B, H*W, C] -> [B, H*W, C]; the hidden map stays channels-first [B, hidden, H, W].

        fc1 is computed transposed (``W1^T x^T``) straight into the depth-wise conv's NCHW layout and
        fc2 reads that map transposed, so no transpose of the wide hidden map is ever copied (Paddle
        copies strided views on one thread, forward and backward). Same function as upstream's.
        """
        b, n, _ = x.shape
        x = paddle.matmul(self.fc1.weight, x, transpose_x=True, transpose_y=True).reshape([b, -1, h, w])
        x = self.dwconv(x if self.fc1.bias is None else add_channel_bias(x, self.fc1.bias))
        x = self.drop(self.act(x))
        x = paddle.matmul(x.reshape([b, -1, n]), self.fc2.weight, transpose_x=True)
        return self.drop(x if self.fc2.bias is None else add_bias(x, self.fc2.bias))


class MiTBlock(nn.Layer):
    """Pre-norm transformer block: x + attn(LN(x)), then x + MixFFN(LN(x)), with stochastic depth.

    Args:
        dim: token width.
        num_heads: attention heads.
        sr_ratio: key/value spatial reduction.
        mlp_ratio: hidden width of the FFN relative to ``dim``.
        qkv_bias: bias on the query/key/value projections.
        drop: dropout after projections.
        attn_drop: dropout on attention weights.
        drop_path: stochastic depth probability.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        sr_ratio: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
    ):
        super().__init__()
        self.norm1 = LayerNorm(dim, epsilon=BLOCK_LN_EPS)
        self.attn = EfficientSelfAttention(dim, num_heads, sr_ratio, qkv_bias, attn_drop, drop)
        self.norm2 = LayerNorm(dim, epsilon=BLOCK_LN_EPS)
        self.ffn = MixFFN(dim, int(dim * mlp_ratio), drop)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: paddle.Tensor, h: int, w: int) -> paddle.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), h, w))
        return x + self.drop_path(self.ffn(self.norm2(x), h, w))


class MiTStage(nn.Layer):
    """One encoder stage: overlapping patch embedding, ``len(blocks)`` blocks, LayerNorm.

    Args:
        patch_embed: the stage's downsampling embedding.
        blocks: the stage's transformer blocks.
        dim: the stage's width (for the closing norm).
    """

    def __init__(self, patch_embed: OverlapPatchEmbed, blocks: Sequence[MiTBlock], dim: int):
        super().__init__()
        self.patch_embed = patch_embed
        self.blocks = nn.LayerList(blocks)
        self.norm = LayerNorm(dim, epsilon=BLOCK_LN_EPS)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        """NCHW in, NCHW out (at this stage's stride)."""
        tokens, h, w = self.patch_embed(x)
        for block in self.blocks:
            tokens = block(tokens, h, w)
        tokens = self.norm(tokens)
        return tokens.reshape([tokens.shape[0], h, w, tokens.shape[2]]).transpose([0, 3, 1, 2])


@BACKBONES.register
class MixVisionTransformer(nn.Layer):
    """Mix Transformer encoder: four stages at strides 4, 8, 16 and 32.

    Args:
        embed_dims: width of each stage.
        num_heads: attention heads per stage.
        depths: blocks per stage.
        sr_ratios: key/value spatial reduction per stage.
        mlp_ratios: FFN hidden-width ratio per stage.
        in_channels: input image channels.
        qkv_bias: bias on the query/key/value projections.
        drop_rate: dropout after projections.
        attn_drop_rate: dropout on attention weights.
        drop_path_rate: stochastic depth of the last block; it grows linearly from 0 over all blocks.

    Attributes:
        out_channels: width of each output, ``embed_dims``.
        out_strides: stride of each output, [4, 8, 16, 32].
    """

    # Pretrained (ImageNet) weights may carry the classifier (head.*), which segmentation drops.
    pretrained_tolerance = Tolerance(unexpected=("head",))

    def __init__(
        self,
        *,
        embed_dims: Sequence[int] = (64, 128, 320, 512),
        num_heads: Sequence[int] = (1, 2, 5, 8),
        depths: Sequence[int] = (3, 4, 6, 3),
        sr_ratios: Sequence[int] = (8, 4, 2, 1),
        mlp_ratios: Sequence[float] = (4, 4, 4, 4),
        in_channels: int = 3,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
    ):
        super().__init__()
        per_stage = [len(embed_dims), len(num_heads), len(depths), len(sr_ratios), len(mlp_ratios)]
        if len(set(per_stage)) != 1:
            raise ConfigError(
                "embed_dims, num_heads, depths, sr_ratios and mlp_ratios need one entry per stage; "
                f"got lengths {per_stage}"
            )
        self.out_channels = list(embed_dims)
        self.out_strides = [4 * 2**i for i in range(len(embed_dims))]
        drop_paths = np.linspace(0.0, drop_path_rate, sum(depths)).tolist()
        stages = []
        width = in_channels
        for i, dim in enumerate(embed_dims):
            embed = OverlapPatchEmbed(width, dim, kernel_size=7 if i == 0 else 3, stride=4 if i == 0 else 2)
            first = sum(depths[:i])
            blocks = [
                MiTBlock(
                    dim,
                    num_heads[i],
                    sr_ratios[i],
                    mlp_ratios[i],
                    qkv_bias,
                    drop_rate,
                    attn_drop_rate,
                    drop_paths[first + j],
                )
                for j in range(depths[i])
            ]
            stages.append(MiTStage(embed, blocks, dim))
            width = dim
        self.stages = nn.LayerList(stages)
        self.apply(init_mit_weights)

    def forward(self, x: paddle.Tensor) -> List[paddle.Tensor]:
        """NCHW image -> four NCHW feature maps (strides 4, 8, 16, 32)."""
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats

    @staticmethod
    def remap_checkpoint_keys(state: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Any published MiT checkpoint -> segkit's names; see ``convert_segformer_checkpoint``."""
        return convert_segformer_checkpoint(state, prefix="")


# ----------------------------------------------------------------------------------------------
# Decoder
# ----------------------------------------------------------------------------------------------


class ConvBNReLU(nn.Layer):
    """Conv (no bias) + BatchNorm + ReLU.

    Args:
        in_channels: input width.
        out_channels: output width.
        kernel_size: square kernel; padding keeps the size.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1):
        super().__init__()
        self.conv = Conv2D(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias_attr=False)
        self.bn = nn.BatchNorm2D(out_channels)
        self.act = nn.ReLU()

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.act(self.bn(self.conv(x)))


class AllMLPHead(nn.Layer):
    """SegFormer's All-MLP decoder: per-level linear to ``embed_dim``, resize, concat, fuse, classify.

    Computes ``classifier(dropout(ReLU(BN(fuse_conv(concat(resize(embed_i(c_i))))))))`` at the
    resolution of the first (finest) input. The fusion conv is folded into each level's linear
    (see the module docstring), which gives the same result without the wide conv at stride 4.

    Args:
        in_channels: width of each input level, finest first (a backbone's ``out_channels``).
        embed_dim: the decoder width E.
        num_classes: number of output classes.
        dropout: channel dropout (Dropout2D) before the classifier.
        reverse_concat: True concatenates coarsest first (c4, c3, c2, c1) as SegFormer does;
            False concatenates finest first (c1, ..., c4) as mmseg's SegformerHead (HRViT) does.
            It decides which slice of the fusion weight belongs to which level.
        align_corners: ``align_corners`` of the bilinear resizes.
        level_norm: mmseg 1.x's ``SegformerHead``: each level's linear has no bias and is followed
            by BatchNorm and ReLU (``level_bn``) before the fusion; NVlabs, PaddleSeg and Hugging
            Face have a plain linear with bias.
    """

    def __init__(
        self,
        *,
        in_channels: Sequence[int],
        embed_dim: int,
        num_classes: int,
        dropout: float = 0.1,
        reverse_concat: bool = True,
        align_corners: bool = False,
        level_norm: bool = False,
    ):
        super().__init__()
        self.in_channels = list(in_channels)
        self.embed_dim = embed_dim
        self.reverse_concat = reverse_concat
        self.align_corners = align_corners
        self.level_norm = level_norm
        bias = False if level_norm else None
        self.embed = nn.LayerList([Linear(c, embed_dim, bias_attr=bias) for c in self.in_channels])
        if level_norm:
            self.level_bn = nn.LayerList([nn.BatchNorm2D(embed_dim) for _ in self.in_channels])
        self.fuse = ConvBNReLU(embed_dim * len(self.in_channels), embed_dim, kernel_size=1)
        self.dropout = Dropout2D(dropout)
        self.classifier = Conv2D(embed_dim, num_classes, kernel_size=1)

    def concat_slot(self, level: int) -> int:
        """Position of ``level`` (0 = finest) in the concatenation the fusion conv reads."""
        return len(self.in_channels) - 1 - level if self.reverse_concat else level

    def fused_level(self, level: int, feat: paddle.Tensor) -> paddle.Tensor:
        """``fuse_slice @ (embed(feat))`` for one level, as a single 1x1 conv at the level's resolution.

        With ``level_norm`` the level's BatchNorm and ReLU sit between the two, so they stay two
        1x1 convs (the fusion slice still runs at the level's own resolution).
        """
        e = self.embed_dim
        slot = self.concat_slot(level)
        fuse_slice = self.fuse.conv.weight[:, slot * e : (slot + 1) * e, 0, 0]  # [E_out, E]
        linear = self.embed[level]  # y = x @ W + b with W [C_in, E]
        if self.level_norm:
            embedded = F.relu(self.level_bn[level](F.conv2d(feat, linear.weight.T.unsqueeze([2, 3]))))
            return F.conv2d(embedded, fuse_slice.unsqueeze([2, 3]))
        weight = paddle.matmul(fuse_slice, linear.weight, transpose_y=True)  # [E_out, C_in]
        bias = paddle.matmul(fuse_slice, linear.bias.unsqueeze(1)).squeeze(1)  # [E_out]
        return conv2d_nchw(feat, weight.unsqueeze([2, 3]), bias)

    def resized_level(self, level: int, feat: paddle.Tensor, size) -> paddle.Tensor:
        """``fused_level`` resized to ``size``, the finest level's resolution (where it already is)."""
        y = self.fused_level(level, feat)
        return resize_bilinear(y, size, self.align_corners) if level > 0 else y

    def forward(self, feats: Sequence[paddle.Tensor]) -> paddle.Tensor:
        """Feature maps (finest first, NCHW) -> logits at the finest map's resolution."""
        if len(feats) != len(self.in_channels):
            raise ValueError(f"AllMLPHead expects {len(self.in_channels)} feature maps, got {len(feats)}")
        size = feats[0].shape[2:]
        # Coarse levels first, so the sum runs in the same order as upstream's concatenation.
        fused = add_all(self.resized_level(level, feats[level], size) for level in reversed(range(len(feats))))
        x = self.fuse.act(self.fuse.bn(fused))
        return dropout_pointwise(x, self.dropout, self.classifier)


# ----------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------


@MODELS.register
class SegFormer(SegModel):
    """SegFormer: a multi-level backbone with the All-MLP decoder.

    Args:
        num_classes: number of classes.
        backbone: any backbone declaring ``out_channels`` (MiT, HRViT, ...).
        embedding_dim: decoder width (256 for B0/B1, 768 for B2-B5).
        align_corners: ``align_corners`` of every bilinear resize.
        dropout: channel dropout before the classifier.
        mmseg_head: build mmseg 1.x's ``SegformerHead`` instead of the paper's decoder: a 1x1 conv,
            BatchNorm and ReLU per level and the levels concatenated finest first. Needed for
            mmseg's ``segformer_mit-b*`` checkpoints (``AllMLPHead(level_norm=True)``).

    ``remap_checkpoint_keys`` knows the MiT backbone's upstream names only (NVlabs, PaddleSeg,
    Hugging Face, mmseg); with another backbone, give checkpoints in segkit's names (or that
    backbone's own remap must run first).
    """

    num_outputs = 1
    # Pretrained whole-model weights may have a classifier for another number of classes (left at its
    # initial values, to fine-tune on your classes); every other tensor must match.
    pretrained_tolerance = Tolerance(shape_mismatch=("head.classifier",))
    reverse_concat = True  # SegFormer concatenates c4..c1; HRViT's head (a subclass) c1..c4

    def __init__(
        self,
        *,
        num_classes: int,
        backbone: Backbone,
        embedding_dim: int,
        align_corners: bool = False,
        dropout: float = 0.1,
        mmseg_head: bool = False,
    ):
        super().__init__()
        if not hasattr(backbone, "out_channels"):
            raise ConfigError(
                f"{type(self).__name__} needs a backbone that declares out_channels (one width per output "
                f"level); got {type(backbone).__name__}, which does not. Use a registered backbone such as "
                "mit_b0 or hrvit_b1, or add out_channels/out_strides to yours."
            )
        self.num_classes = num_classes
        self.align_corners = align_corners
        self.output_align_corners = align_corners
        self.backbone = backbone
        self.head = AllMLPHead(
            in_channels=backbone.out_channels, embed_dim=embedding_dim, num_classes=num_classes, dropout=dropout,
            reverse_concat=self.reverse_concat and not mmseg_head, align_corners=align_corners, level_norm=mmseg_head,
        )
        self.init_head()

    def init_head(self) -> None:
        """Initialise the head before any pretrained weights load; the head's own init by default."""

    def forward(self, x: paddle.Tensor):
        logits = self.head(self.backbone(x))
        return self.outputs([self.resize_output(logits, x.shape[2:])])

    def remap_checkpoint_keys(self, state: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Any published SegFormer checkpoint -> segkit's names; see ``convert_segformer_checkpoint``.

        Raises:
            CheckpointError: the checkpoint's head and this model's differ in kind (mmseg 1.x's
                per-level BatchNorm or the paper's plain linears), with the setting that fixes it.
        """
        state = convert_segformer_checkpoint(state, prefix="backbone.")
        has_level_bn = any(k.startswith("head.level_bn.") for k in state)
        if any(k.startswith("head.embed.") for k in state) and has_level_bn != self.head.level_norm:
            heads = ("the paper's decoder (a linear per level)", "mmseg 1.x's SegformerHead (conv, BatchNorm, ReLU per level)")
            value = str(has_level_bn).lower()
            raise CheckpointError(
                f"the checkpoint has {heads[has_level_bn]} but the model {heads[not has_level_bn]}: build the model "
                f"with mmseg_head: {value} (in the config's model section, --opts model.mmseg_head={value}, or "
                f"tools/convert_weights.py --model_args mmseg_head={value})."
            )
        return state


# ----------------------------------------------------------------------------------------------
# Upstream checkpoint names
# ----------------------------------------------------------------------------------------------

_MIT_STAGE_KEY = re.compile(r"^(patch_embed|block|norm)([1-9])\.(.*)$")
_MIT_BLOCK_RENAMES = (("attn.norm.", "attn.sr_norm."), ("mlp.dwconv.dwconv.", "ffn.dwconv."), ("mlp.", "ffn."))
# PaddleSeg's head names (no prefix, ``_conv`` / ``_batch_norm``) and NVlabs' (``decode_head.``, ``conv`` / ``bn``).
_SEGFORMER_HEAD_RENAMES = (
    (re.compile(r"^(?:decode_head\.)?linear_c([1-9])\.proj\.(.*)$"), lambda m: f"head.embed.{int(m[1]) - 1}.{m[2]}"),
    (re.compile(r"^(?:decode_head\.)?linear_fuse\.(?:_conv|conv)\.(.*)$"), lambda m: f"head.fuse.conv.{m[1]}"),
    (re.compile(r"^(?:decode_head\.)?linear_fuse\.(?:_batch_norm|bn)\.(.*)$"), lambda m: f"head.fuse.bn.{m[1]}"),
    (re.compile(r"^(?:decode_head\.)?linear_pred\.(.*)$"), lambda m: f"head.classifier.{m[1]}"),
)


def _remap_mit_key(key: str) -> str:
    match = _MIT_STAGE_KEY.match(key)
    if match is None:
        return key
    kind, stage, rest = match[1], int(match[2]) - 1, match[3]
    if kind == "patch_embed":
        return f"stages.{stage}.patch_embed.{rest}"
    if kind == "norm":
        return f"stages.{stage}.norm.{rest}"
    index, _, inner = rest.partition(".")
    for old, new in _MIT_BLOCK_RENAMES:
        if inner.startswith(old):
            inner = new + inner[len(old) :]
            break
    return f"stages.{stage}.blocks.{index}.{inner}"


def remap_mit_keys(state: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Rename PaddleSeg / NVlabs ``MixVisionTransformer`` keys to segkit's; other keys pass through.

    ``patch_embed{i}.*`` -> ``stages.{i-1}.patch_embed.*``; ``block{i}.{j}.*`` ->
    ``stages.{i-1}.blocks.{j}.*`` (``attn.norm`` -> ``attn.sr_norm``, ``mlp.dwconv.dwconv`` ->
    ``ffn.dwconv``, ``mlp`` -> ``ffn``); ``norm{i}.*`` -> ``stages.{i-1}.norm.*``. segkit's own
    names match none of these patterns, so the function is idempotent.
    """
    return {_remap_mit_key(k): v for k, v in state.items()}


def remap_segformer_keys(state: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Rename PaddleSeg ``SegFormer`` (whole-model) keys to segkit's; idempotent on segkit names.

    ``backbone.*`` goes through ``remap_mit_keys``; ``linear_c{i}.proj`` -> ``head.embed.{i-1}``,
    ``linear_fuse._conv`` -> ``head.fuse.conv``, ``linear_fuse._batch_norm`` -> ``head.fuse.bn``,
    ``linear_pred`` -> ``head.classifier``. Other keys pass through unchanged (so a wrong file
    is reported by the strict loader with its own names).
    """
    out = {}
    for key, value in state.items():
        if key.startswith("backbone."):
            key = "backbone." + _remap_mit_key(key[len("backbone.") :])
        else:
            for pattern, rename in _SEGFORMER_HEAD_RENAMES:
                match = pattern.match(key)
                if match:
                    key = rename(match)
                    break
        out[key] = value
    return out


# Hugging Face (Hub files, as transformers' save_pretrained writes them): names inside the encoder.
_HF_PREFIXES = ("segformer.encoder.", "encoder.patch_embeddings.", "encoder.block.", "encoder.layer_norm.")
_HF_ENCODER_KEY = re.compile(r"^(patch_embeddings|block|layer_norm)\.(\d+)\.(.*)$")
_HF_BLOCK_RENAMES = (
    ("layer_norm_1.", "norm1."), ("layer_norm_2.", "norm2."), ("attention.self.query.", "attn.q."),
    ("attention.self.key.", "attn.k."), ("attention.self.value.", "attn.v."), ("attention.self.sr.", "attn.sr."),
    ("attention.self.layer_norm.", "attn.norm."), ("attention.output.dense.", "attn.proj."),
    ("mlp.dense1.", "mlp.fc1."), ("mlp.dense2.", "mlp.fc2."),
)
_HF_HEAD_RENAMES = (
    (re.compile(r"^decode_head\.linear_c\.(\d+)\.(.*)$"), lambda m: f"decode_head.linear_c{int(m[1]) + 1}.{m[2]}"),
    (re.compile(r"^decode_head\.linear_fuse\.(.*)$"), lambda m: f"decode_head.linear_fuse.conv.{m[1]}"),
    (re.compile(r"^decode_head\.batch_norm\.(.*)$"), lambda m: f"decode_head.linear_fuse.bn.{m[1]}"),
    (re.compile(r"^decode_head\.classifier\.(.*)$"), lambda m: f"decode_head.linear_pred.{m[1]}"),
    (re.compile(r"^classifier\.(.*)$"), lambda m: f"head.{m[1]}"),  # an ImageNet classifier
)
# MMSegmentation 1.x (``mit_b*`` backbones and ``segformer_mit-b*`` models): module paths.
_MMSEG_MIT_KEY = re.compile(r"^(backbone\.)?layers\.(\d+)\.([012])\.(.*)$")
_MMSEG_BLOCK_RENAMES = (
    ("attn.attn.out_proj.", "attn.proj."), ("ffn.layers.0.", "mlp.fc1."), ("ffn.layers.1.", "mlp.dwconv.dwconv."),
    ("ffn.layers.4.", "mlp.fc2."),
)
_MMSEG_HEAD_RENAMES = (
    (re.compile(r"^decode_head\.convs\.(\d+)\.conv\.(.*)$"), lambda m: f"head.embed.{m[1]}.{m[2]}"),
    (re.compile(r"^decode_head\.convs\.(\d+)\.bn\.(.*)$"), lambda m: f"head.level_bn.{m[1]}.{m[2]}"),
    (re.compile(r"^decode_head\.fusion_conv\.conv\.(.*)$"), lambda m: f"head.fuse.conv.{m[1]}"),
    (re.compile(r"^decode_head\.fusion_conv\.bn\.(.*)$"), lambda m: f"head.fuse.bn.{m[1]}"),
    (re.compile(r"^decode_head\.conv_seg\.(.*)$"), lambda m: f"head.classifier.{m[1]}"),
)


def _rename_first(key: str, renames) -> str:
    """Apply the first (compiled pattern, rename) pair that matches ``key``; unchanged if none does."""
    for pattern, rename in renames:
        match = pattern.match(key)
        if match:
            return rename(match)
    return key


def _replace_prefix(text: str, renames) -> str:
    """Replace the first matching (old prefix, new prefix) pair at the start of ``text``."""
    for old, new in renames:
        if text.startswith(old):
            return new + text[len(old) :]
    return text


def detect_segformer_format(state: Dict[str, np.ndarray]) -> str:
    """Which codebase wrote a SegFormer / MiT state dict: ``huggingface``, ``mmseg``, ``nvlabs`` or ``paddleseg``.

    Hugging Face and mmseg 1.x are told by their module paths. NVlabs and PaddleSeg share names and
    differ in layout: NVlabs (PyTorch) has a segmentation head under ``decode_head.``, BatchNorm
    ``running_*`` statistics, and key/value Linear weights of shape (2C, C) where Paddle's are (C, 2C).
    segkit's own names come out as ``paddleseg`` (its remap leaves them as they are).
    """
    keys = list(state)
    if any(k.startswith(_HF_PREFIXES) or k.startswith("decode_head.linear_c.") for k in keys):
        return "huggingface"
    if any(_MMSEG_MIT_KEY.match(k) or k.startswith(("decode_head.convs.", "decode_head.fusion_conv.")) for k in keys):
        return "mmseg"
    if any(k.startswith("decode_head.") or k.endswith("running_mean") for k in keys):
        return "nvlabs"
    kv = [v for k, v in state.items() if k.endswith("attn.kv.weight") and np.ndim(v) == 2]
    return "nvlabs" if kv and kv[0].shape[0] == 2 * kv[0].shape[1] else "paddleseg"


def _merge_key_value(state: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Stack separate ``attn.k`` / ``attn.v`` projections into one ``attn.kv`` (keys first, as upstream reads it)."""
    out = {}
    for key, value in state.items():
        if ".attn.v." in key and key.replace(".attn.v.", ".attn.k.") in state:
            continue
        partner = key.replace(".attn.k.", ".attn.v.")
        if ".attn.k." in key and partner in state:
            out[key.replace(".attn.k.", ".attn.kv.")] = np.concatenate([value, state[partner]], axis=0)
        else:
            out[key] = value
    return out


def _huggingface_to_nvlabs(state: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Hugging Face ``Segformer*`` names -> NVlabs names (layouts stay PyTorch's)."""
    out = {}
    for key, value in state.items():
        prefix = next((p for p in ("segformer.encoder.", "encoder.") if key.startswith(p)), None)
        match = _HF_ENCODER_KEY.match(key[len(prefix) :]) if prefix else None
        if match is None:
            out[_rename_first(key, _HF_HEAD_RENAMES)] = value
            continue
        kind, index, rest = match[1], int(match[2]), match[3]
        if kind == "patch_embeddings":
            name = f"patch_embed{index + 1}.{rest.replace('layer_norm.', 'norm.')}"
        elif kind == "layer_norm":
            name = f"norm{index + 1}.{rest}"
        else:
            block, _, inner = rest.partition(".")
            name = f"block{index + 1}.{block}.{_replace_prefix(inner, _HF_BLOCK_RENAMES)}"
        out["backbone." + name] = value
    return _merge_key_value(out)


def _mmseg_mit_key(stage: int, part: str, rest: str) -> str:
    """One mmseg ``layers.{stage}.{part}.{rest}`` backbone key -> its NVlabs name."""
    if part == "0":
        return f"patch_embed{stage + 1}.{rest.replace('projection.', 'proj.')}"
    if part == "2":
        return f"norm{stage + 1}.{rest}"
    block, _, inner = rest.partition(".")
    return f"block{stage + 1}.{block}.{_replace_prefix(inner, _MMSEG_BLOCK_RENAMES)}"


def _mmseg_to_nvlabs(state: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """mmseg 1.x ``MixVisionTransformer`` / ``SegformerHead`` keys -> NVlabs backbone names, segkit head names.

    mmseg fuses the query, key and value projections into ``in_proj_weight`` (3C, C) and stores the
    MixFFN's linears as 1x1 convs; both are split / flattened back into PyTorch Linear weights.
    Its head (a 1x1 conv + BN + ReLU per level, see ``AllMLPHead(level_norm=True)``) has no NVlabs
    counterpart, so it is named segkit's way directly (still in PyTorch layouts).
    """
    out = {}
    for key, value in state.items():
        match = _MMSEG_MIT_KEY.match(key)
        if match is None:
            out[_rename_first(key, _MMSEG_HEAD_RENAMES)] = value
            continue
        name = (match[1] or "") + _mmseg_mit_key(int(match[2]), match[3], match[4])
        if ".attn.attn.in_proj_" in name:
            dim = value.shape[0] // 3
            leaf = "weight" if name.endswith("weight") else "bias"
            block = name[: name.index(".attn.attn.in_proj_")]
            out[f"{block}.attn.q.{leaf}"], out[f"{block}.attn.kv.{leaf}"] = value[:dim], value[dim:]
            continue
        if name.endswith(("mlp.fc1.weight", "mlp.fc2.weight")):
            value = value.reshape(value.shape[0], -1)
        out[name] = value
    return {k: (v.reshape(v.shape[0], -1) if k.startswith("head.embed.") and k.endswith(".weight") else v)
            for k, v in out.items()}


def _drop_nvlabs_unused(state: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Drop ``decode_head.conv_seg``: NVlabs' base head creates it, its SegFormerHead never uses it."""
    return {k: v for k, v in state.items() if not k.startswith("decode_head.conv_seg.")}


def _paddle_layouts(state: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """PyTorch layouts -> Paddle's: every 2-D weight is a Linear (transposed); BatchNorm statistics renamed."""
    return {
        rename_bn_buffer(k): (torch_linear(v) if np.ndim(v) == 2 and k.endswith(".weight") else v)
        for k, v in state.items()
    }


_TO_NVLABS_NAMES = {
    "huggingface": _huggingface_to_nvlabs,
    "mmseg": _mmseg_to_nvlabs,
    "nvlabs": _drop_nvlabs_unused,
}


def convert_segformer_checkpoint(state: Dict[str, np.ndarray], prefix: str = "backbone.") -> Dict[str, np.ndarray]:
    """Any published SegFormer / MiT checkpoint -> segkit names and Paddle layouts.

    Recognises (``detect_segformer_format``) NVlabs ``.pth`` files (ImageNet ``mit_b*`` and
    segmentation models), Hugging Face ``nvidia/mit-b*`` / ``nvidia/segformer-*`` state dicts,
    mmseg 1.x ``mit_b*`` and ``segformer_mit-b*`` checkpoints, PaddleSeg ``.pdparams`` and segkit's
    own. Linear weights are transposed, Hugging Face's separate key / value projections stacked and
    mmseg's fused query-key-value split, BatchNorm statistics renamed, ``module.`` prefixes and
    ``num_batches_tracked`` counters dropped. Keys that match nothing pass unchanged, so the strict
    loader reports them by name. Pure: the input is not modified.

    Args:
        state: name -> array.
        prefix: ``"backbone."`` for a whole ``SegFormer``; ``""`` for a bare ``MixVisionTransformer``,
            in which case a segmentation checkpoint's ``backbone.`` prefix is dropped and its head's
            keys (like an ImageNet classifier) come out under ``head.``, which the backbone ignores.
    """
    state = strip_training_wrappers(state)
    fmt = detect_segformer_format(state)
    if fmt != "paddleseg":
        state = _paddle_layouts(_TO_NVLABS_NAMES[fmt](state))
    return remap_segformer_keys(state) if prefix else remap_mit_keys(backbone_part(state))


# ----------------------------------------------------------------------------------------------
# Variants
# ----------------------------------------------------------------------------------------------

_MIT_SMALL = dict(embed_dims=(32, 64, 160, 256))
_MIT_WIDE = dict(embed_dims=(64, 128, 320, 512))
MIT_VARIANTS = {
    "B0": dict(_MIT_SMALL, depths=(2, 2, 2, 2)),
    "B1": dict(_MIT_WIDE, depths=(2, 2, 2, 2)),
    "B2": dict(_MIT_WIDE, depths=(3, 4, 6, 3)),
    "B3": dict(_MIT_WIDE, depths=(3, 4, 18, 3)),
    "B4": dict(_MIT_WIDE, depths=(3, 8, 27, 3)),
    "B5": dict(_MIT_WIDE, depths=(3, 6, 40, 3)),
}
SEGFORMER_DECODER_DIMS = {"B0": 256, "B1": 256, "B2": 768, "B3": 768, "B4": 768, "B5": 768}


def _mit(
    variant: str, in_channels: int, drop_path_rate: float, attn_drop_rate: float
) -> MixVisionTransformer:
    return MixVisionTransformer(
        **MIT_VARIANTS[variant],
        num_heads=(1, 2, 5, 8),
        sr_ratios=(8, 4, 2, 1),
        mlp_ratios=(4, 4, 4, 4),
        in_channels=in_channels,
        qkv_bias=True,
        attn_drop_rate=attn_drop_rate,
        drop_path_rate=drop_path_rate,
    )


@BACKBONES.register
def mit_b0(
    *, in_channels: int = 3, drop_path_rate: float = 0.1, attn_drop_rate: float = 0.0
) -> MixVisionTransformer:
    """MiT-B0: widths (32, 64, 160, 256), depths (2, 2, 2, 2)."""
    return _mit("B0", in_channels, drop_path_rate, attn_drop_rate)


@BACKBONES.register
def mit_b1(
    *, in_channels: int = 3, drop_path_rate: float = 0.1, attn_drop_rate: float = 0.0
) -> MixVisionTransformer:
    """MiT-B1: widths (64, 128, 320, 512), depths (2, 2, 2, 2)."""
    return _mit("B1", in_channels, drop_path_rate, attn_drop_rate)


@BACKBONES.register
def mit_b2(
    *, in_channels: int = 3, drop_path_rate: float = 0.1, attn_drop_rate: float = 0.0
) -> MixVisionTransformer:
    """MiT-B2: widths (64, 128, 320, 512), depths (3, 4, 6, 3)."""
    return _mit("B2", in_channels, drop_path_rate, attn_drop_rate)


@BACKBONES.register
def mit_b3(
    *, in_channels: int = 3, drop_path_rate: float = 0.1, attn_drop_rate: float = 0.0
) -> MixVisionTransformer:
    """MiT-B3: widths (64, 128, 320, 512), depths (3, 4, 18, 3)."""
    return _mit("B3", in_channels, drop_path_rate, attn_drop_rate)


@BACKBONES.register
def mit_b4(
    *, in_channels: int = 3, drop_path_rate: float = 0.1, attn_drop_rate: float = 0.0
) -> MixVisionTransformer:
    """MiT-B4: widths (64, 128, 320, 512), depths (3, 8, 27, 3)."""
    return _mit("B4", in_channels, drop_path_rate, attn_drop_rate)


@BACKBONES.register
def mit_b5(
    *, in_channels: int = 3, drop_path_rate: float = 0.1, attn_drop_rate: float = 0.0
) -> MixVisionTransformer:
    """MiT-B5: widths (64, 128, 320, 512), depths (3, 6, 40, 3)."""
    return _mit("B5", in_channels, drop_path_rate, attn_drop_rate)


def _segformer(
    variant: str,
    num_classes: int,
    drop_path_rate: float,
    align_corners: bool,
    mmseg_head: bool,
) -> SegFormer:
    backbone = _mit(variant, 3, drop_path_rate, 0.0)
    return SegFormer(num_classes=num_classes, backbone=backbone, embedding_dim=SEGFORMER_DECODER_DIMS[variant],
                     align_corners=align_corners, mmseg_head=mmseg_head)


@MODELS.register
def segformer_b0(
    *,
    num_classes: int,
    drop_path_rate: float = 0.1,
    align_corners: bool = False,
    mmseg_head: bool = False,
) -> SegFormer:
    """SegFormer-B0: MiT-B0 encoder, decoder width 256 (3.75M parameters at 150 classes).

    Args:
        num_classes: number of classes.
        drop_path_rate: stochastic depth of the last encoder block.
        align_corners: ``align_corners`` of the bilinear resizes.
        mmseg_head: mmseg 1.x's head (for its ``segformer_mit-b*`` checkpoints); see ``SegFormer``.
    """
    return _segformer("B0", num_classes, drop_path_rate, align_corners, mmseg_head)


@MODELS.register
def segformer_b1(
    *,
    num_classes: int,
    drop_path_rate: float = 0.1,
    align_corners: bool = False,
    mmseg_head: bool = False,
) -> SegFormer:
    """SegFormer-B1: MiT-B1 encoder, decoder width 256. Arguments as ``segformer_b0``."""
    return _segformer("B1", num_classes, drop_path_rate, align_corners, mmseg_head)


@MODELS.register
def segformer_b2(
    *,
    num_classes: int,
    drop_path_rate: float = 0.1,
    align_corners: bool = False,
    mmseg_head: bool = False,
) -> SegFormer:
    """SegFormer-B2: MiT-B2 encoder, decoder width 768. Arguments as ``segformer_b0``."""
    return _segformer("B2", num_classes, drop_path_rate, align_corners, mmseg_head)


@MODELS.register
def segformer_b3(
    *,
    num_classes: int,
    drop_path_rate: float = 0.1,
    align_corners: bool = False,
    mmseg_head: bool = False,
) -> SegFormer:
    """SegFormer-B3: MiT-B3 encoder, decoder width 768. Arguments as ``segformer_b0``."""
    return _segformer("B3", num_classes, drop_path_rate, align_corners, mmseg_head)


@MODELS.register
def segformer_b4(
    *,
    num_classes: int,
    drop_path_rate: float = 0.1,
    align_corners: bool = False,
    mmseg_head: bool = False,
) -> SegFormer:
    """SegFormer-B4: MiT-B4 encoder, decoder width 768. Arguments as ``segformer_b0``."""
    return _segformer("B4", num_classes, drop_path_rate, align_corners, mmseg_head)


@MODELS.register
def segformer_b5(
    *,
    num_classes: int,
    drop_path_rate: float = 0.1,
    align_corners: bool = False,
    mmseg_head: bool = False,
) -> SegFormer:
    """SegFormer-B5: MiT-B5 encoder, decoder width 768. Arguments as ``segformer_b0``."""
    return _segformer("B5", num_classes, drop_path_rate, align_corners, mmseg_head)
