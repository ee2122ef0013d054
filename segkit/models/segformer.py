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
  translated once by the pure functions ``remap_mit_keys`` / ``remap_segformer_keys``, which
  ``segkit.weights.load_weights`` applies, so PaddleSeg ``model.pdparams`` files load unchanged.
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
"""

import math
import re
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import paddle
import paddle.nn.functional as F
from paddle import nn

from segkit.errors import ConfigError
from segkit.models.base import SegModel, load_pretrained
from segkit.models.layers import DropPath
from segkit.registry import BACKBONES, HEADS, MODELS

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
        self.proj = nn.Conv2D(in_channels, embed_dim, kernel_size, stride=stride, padding=kernel_size // 2)
        self.norm = nn.LayerNorm(embed_dim, epsilon=DEFAULT_LN_EPS)

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
        self.q = nn.Linear(dim, dim, bias_attr=None if qkv_bias else False)
        self.kv = nn.Linear(dim, 2 * dim, bias_attr=None if qkv_bias else False)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        if sr_ratio > 1:
            self.sr = nn.Conv2D(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
            self.sr_norm = nn.LayerNorm(dim, epsilon=DEFAULT_LN_EPS)

    def forward(self, x: paddle.Tensor, h: int, w: int) -> paddle.Tensor:
        b, n, c = x.shape
        q = self.q(x).reshape([b, n, self.num_heads, self.head_dim])
        if self.sr_ratio > 1:
            grid = x.transpose([0, 2, 1]).reshape([b, c, h, w])
            x = self.sr_norm(self.sr(grid).flatten(2).transpose([0, 2, 1]))
        k, v = self.kv(x).reshape([b, -1, 2, self.num_heads, self.head_dim]).unbind(axis=2)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop, training=self.training)
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
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.dwconv = nn.Conv2D(hidden_dim, hidden_dim, 3, padding=1, groups=hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: paddle.Tensor, h: int, w: int) -> paddle.Tensor:
        x = self.fc1(x)
        b, n, c = x.shape
        x = self.dwconv(x.transpose([0, 2, 1]).reshape([b, c, h, w])).flatten(2).transpose([0, 2, 1])
        x = self.drop(self.act(x))
        return self.drop(self.fc2(x))


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
        self.norm1 = nn.LayerNorm(dim, epsilon=BLOCK_LN_EPS)
        self.attn = EfficientSelfAttention(dim, num_heads, sr_ratio, qkv_bias, attn_drop, drop)
        self.norm2 = nn.LayerNorm(dim, epsilon=BLOCK_LN_EPS)
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
        self.norm = nn.LayerNorm(dim, epsilon=BLOCK_LN_EPS)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        """NCHW in, NCHW out (at this stage's stride)."""
        tokens, h, w = self.patch_embed(x)
        for block in self.blocks:
            tokens = block(tokens, h, w)
        tokens = self.norm(tokens)
        return tokens.reshape([tokens.shape[0], h, w, tokens.shape[2]]).transpose([0, 3, 1, 2])


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
        pretrained: backbone weights (path, URL or zip), PaddleSeg or segkit names; an ImageNet
            classification head in the file (``head.*``) is ignored, anything else must match.

    Attributes:
        out_channels: width of each output, ``embed_dims``.
        out_strides: stride of each output, [4, 8, 16, 32].
    """

    def __init__(
        self,
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
        pretrained: Optional[str] = None,
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
        # Upstream checkpoints may carry the ImageNet classifier (head.*), which segmentation drops.
        load_pretrained(self, pretrained, allow_unexpected=("head",))

    def forward(self, x: paddle.Tensor) -> List[paddle.Tensor]:
        """NCHW image -> four NCHW feature maps (strides 4, 8, 16, 32)."""
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats

    @staticmethod
    def remap_checkpoint_keys(state: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """PaddleSeg ``MixVisionTransformer`` keys -> segkit's; see ``remap_mit_keys``."""
        return remap_mit_keys(state)


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
        self.conv = nn.Conv2D(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias_attr=False)
        self.bn = nn.BatchNorm2D(out_channels)
        self.act = nn.ReLU()

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.act(self.bn(self.conv(x)))


@HEADS.register
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
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        embed_dim: int,
        num_classes: int,
        dropout: float = 0.1,
        reverse_concat: bool = True,
        align_corners: bool = False,
    ):
        super().__init__()
        self.in_channels = list(in_channels)
        self.embed_dim = embed_dim
        self.reverse_concat = reverse_concat
        self.align_corners = align_corners
        self.embed = nn.LayerList([nn.Linear(c, embed_dim) for c in self.in_channels])
        self.fuse = ConvBNReLU(embed_dim * len(self.in_channels), embed_dim, kernel_size=1)
        self.dropout = nn.Dropout2D(dropout)
        self.classifier = nn.Conv2D(embed_dim, num_classes, kernel_size=1)

    def concat_slot(self, level: int) -> int:
        """Position of ``level`` (0 = finest) in the concatenation the fusion conv reads."""
        return len(self.in_channels) - 1 - level if self.reverse_concat else level

    def fused_level(self, level: int, feat: paddle.Tensor) -> paddle.Tensor:
        """``fuse_slice @ (embed(feat))`` for one level, as a single 1x1 conv at the level's resolution."""
        e = self.embed_dim
        slot = self.concat_slot(level)
        fuse_slice = self.fuse.conv.weight[:, slot * e : (slot + 1) * e, 0, 0]  # [E_out, E]
        linear = self.embed[level]  # y = x @ W + b with W [C_in, E]
        weight = paddle.matmul(fuse_slice, linear.weight, transpose_y=True)  # [E_out, C_in]
        bias = paddle.matmul(fuse_slice, linear.bias.unsqueeze(1)).squeeze(1)  # [E_out]
        return F.conv2d(feat, weight.unsqueeze([2, 3]), bias)

    def forward(self, feats: Sequence[paddle.Tensor]) -> paddle.Tensor:
        """Feature maps (finest first, NCHW) -> logits at the finest map's resolution."""
        if len(feats) != len(self.in_channels):
            raise ValueError(f"AllMLPHead expects {len(self.in_channels)} feature maps, got {len(feats)}")
        size = feats[0].shape[2:]
        fused = None
        # Coarse levels first, so the sum runs in the same order as upstream's concatenation.
        for level in reversed(range(len(feats))):
            y = self.fused_level(level, feats[level])
            if level > 0:
                y = F.interpolate(y, size=size, mode="bilinear", align_corners=self.align_corners)
            fused = y if fused is None else fused + y
        x = self.fuse.act(self.fuse.bn(fused))
        return self.classifier(self.dropout(x))


# ----------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------


@MODELS.register
class SegFormer(SegModel):
    """SegFormer: a multi-level backbone with the All-MLP decoder (PaddleSeg's signature).

    Args:
        num_classes: number of classes.
        backbone: any backbone declaring ``out_channels`` (MiT, HRViT, ...).
        embedding_dim: decoder width (256 for B0/B1, 768 for B2-B5).
        align_corners: ``align_corners`` of every bilinear resize.
        pretrained: whole-model weights (path, URL or zip), PaddleSeg or segkit names. A classifier
            trained for another number of classes is left at its initial values; every other key
            must match.
        dropout: channel dropout before the classifier.

    ``remap_checkpoint_keys`` knows PaddleSeg's SegFormer and MiT names only; with another backbone,
    give checkpoints in segkit's names (or that backbone's own remap must run first).
    """

    num_outputs = 1
    reverse_concat = True  # SegFormer concatenates c4..c1; HRViT's head (a subclass) c1..c4

    def __init__(
        self,
        num_classes: int,
        backbone: nn.Layer,
        embedding_dim: int,
        align_corners: bool = False,
        pretrained: Optional[str] = None,
        dropout: float = 0.1,
    ):
        super().__init__()
        if not hasattr(backbone, "out_channels"):
            raise ConfigError(
                f"{type(self).__name__} needs a backbone that declares out_channels (one width per output "
                f"level); got {type(backbone).__name__}, which does not. Use a registered backbone such as "
                "MixVisionTransformer_B0 or HRViT_b1, or add out_channels/out_strides to yours."
            )
        self.num_classes = num_classes
        self.align_corners = align_corners
        self.backbone = backbone
        self.head = AllMLPHead(
            backbone.out_channels, embedding_dim, num_classes, dropout=dropout, reverse_concat=self.reverse_concat,
            align_corners=align_corners,
        )
        self.init_head()
        load_pretrained(self, pretrained, allow_shape_mismatch=("head.classifier",))

    def init_head(self) -> None:
        """Initialise the head before any pretrained weights load; the head's own init by default."""

    def forward(self, x: paddle.Tensor):
        logits = self.head(self.backbone(x))
        logits = F.interpolate(logits, size=x.shape[2:], mode="bilinear", align_corners=self.align_corners)
        return self.outputs([logits])

    @staticmethod
    def remap_checkpoint_keys(state: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """PaddleSeg ``SegFormer`` keys -> segkit's; see ``remap_segformer_keys``."""
        return remap_segformer_keys(state)


# ----------------------------------------------------------------------------------------------
# Upstream checkpoint names
# ----------------------------------------------------------------------------------------------

_MIT_STAGE_KEY = re.compile(r"^(patch_embed|block|norm)([1-9])\.(.*)$")
_MIT_BLOCK_RENAMES = (("attn.norm.", "attn.sr_norm."), ("mlp.dwconv.dwconv.", "ffn.dwconv."), ("mlp.", "ffn."))
_SEGFORMER_HEAD_RENAMES = (
    (re.compile(r"^linear_c([1-9])\.proj\.(.*)$"), lambda m: f"head.embed.{int(m[1]) - 1}.{m[2]}"),
    (re.compile(r"^linear_fuse\._conv\.(.*)$"), lambda m: f"head.fuse.conv.{m[1]}"),
    (re.compile(r"^linear_fuse\._batch_norm\.(.*)$"), lambda m: f"head.fuse.bn.{m[1]}"),
    (re.compile(r"^linear_pred\.(.*)$"), lambda m: f"head.classifier.{m[1]}"),
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
    variant: str, in_channels: int, drop_path_rate: float, attn_drop_rate: float, pretrained: Optional[str]
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
        pretrained=pretrained,
    )


@BACKBONES.register
def MixVisionTransformer_B0(  # noqa: N802 (PaddleSeg's registered name)
    in_channels: int = 3, drop_path_rate: float = 0.1, attn_drop_rate: float = 0.0, pretrained: Optional[str] = None
) -> MixVisionTransformer:
    """MiT-B0: widths (32, 64, 160, 256), depths (2, 2, 2, 2)."""
    return _mit("B0", in_channels, drop_path_rate, attn_drop_rate, pretrained)


@BACKBONES.register
def MixVisionTransformer_B1(  # noqa: N802
    in_channels: int = 3, drop_path_rate: float = 0.1, attn_drop_rate: float = 0.0, pretrained: Optional[str] = None
) -> MixVisionTransformer:
    """MiT-B1: widths (64, 128, 320, 512), depths (2, 2, 2, 2)."""
    return _mit("B1", in_channels, drop_path_rate, attn_drop_rate, pretrained)


@BACKBONES.register
def MixVisionTransformer_B2(  # noqa: N802
    in_channels: int = 3, drop_path_rate: float = 0.1, attn_drop_rate: float = 0.0, pretrained: Optional[str] = None
) -> MixVisionTransformer:
    """MiT-B2: widths (64, 128, 320, 512), depths (3, 4, 6, 3)."""
    return _mit("B2", in_channels, drop_path_rate, attn_drop_rate, pretrained)


@BACKBONES.register
def MixVisionTransformer_B3(  # noqa: N802
    in_channels: int = 3, drop_path_rate: float = 0.1, attn_drop_rate: float = 0.0, pretrained: Optional[str] = None
) -> MixVisionTransformer:
    """MiT-B3: widths (64, 128, 320, 512), depths (3, 4, 18, 3)."""
    return _mit("B3", in_channels, drop_path_rate, attn_drop_rate, pretrained)


@BACKBONES.register
def MixVisionTransformer_B4(  # noqa: N802
    in_channels: int = 3, drop_path_rate: float = 0.1, attn_drop_rate: float = 0.0, pretrained: Optional[str] = None
) -> MixVisionTransformer:
    """MiT-B4: widths (64, 128, 320, 512), depths (3, 8, 27, 3)."""
    return _mit("B4", in_channels, drop_path_rate, attn_drop_rate, pretrained)


@BACKBONES.register
def MixVisionTransformer_B5(  # noqa: N802
    in_channels: int = 3, drop_path_rate: float = 0.1, attn_drop_rate: float = 0.0, pretrained: Optional[str] = None
) -> MixVisionTransformer:
    """MiT-B5: widths (64, 128, 320, 512), depths (3, 6, 40, 3)."""
    return _mit("B5", in_channels, drop_path_rate, attn_drop_rate, pretrained)


def _segformer(
    variant: str,
    num_classes: int,
    pretrained: Optional[str],
    backbone_pretrained: Optional[str],
    drop_path_rate: float,
    align_corners: bool,
) -> SegFormer:
    backbone = _mit(variant, 3, drop_path_rate, 0.0, backbone_pretrained)
    return SegFormer(num_classes, backbone, SEGFORMER_DECODER_DIMS[variant], align_corners, pretrained)


@MODELS.register
def segformer_b0(
    num_classes: int,
    pretrained: Optional[str] = None,
    backbone_pretrained: Optional[str] = None,
    drop_path_rate: float = 0.1,
    align_corners: bool = False,
) -> SegFormer:
    """SegFormer-B0: MiT-B0 encoder, decoder width 256 (3.75M parameters at 150 classes).

    Args:
        num_classes: number of classes.
        pretrained: whole-model weights (PaddleSeg or segkit names).
        backbone_pretrained: ImageNet MiT-B0 weights for the encoder alone.
        drop_path_rate: stochastic depth of the last encoder block.
        align_corners: ``align_corners`` of the bilinear resizes.
    """
    return _segformer("B0", num_classes, pretrained, backbone_pretrained, drop_path_rate, align_corners)


@MODELS.register
def segformer_b1(
    num_classes: int,
    pretrained: Optional[str] = None,
    backbone_pretrained: Optional[str] = None,
    drop_path_rate: float = 0.1,
    align_corners: bool = False,
) -> SegFormer:
    """SegFormer-B1: MiT-B1 encoder, decoder width 256. Arguments as ``segformer_b0``."""
    return _segformer("B1", num_classes, pretrained, backbone_pretrained, drop_path_rate, align_corners)


@MODELS.register
def segformer_b2(
    num_classes: int,
    pretrained: Optional[str] = None,
    backbone_pretrained: Optional[str] = None,
    drop_path_rate: float = 0.1,
    align_corners: bool = False,
) -> SegFormer:
    """SegFormer-B2: MiT-B2 encoder, decoder width 768. Arguments as ``segformer_b0``."""
    return _segformer("B2", num_classes, pretrained, backbone_pretrained, drop_path_rate, align_corners)


@MODELS.register
def segformer_b3(
    num_classes: int,
    pretrained: Optional[str] = None,
    backbone_pretrained: Optional[str] = None,
    drop_path_rate: float = 0.1,
    align_corners: bool = False,
) -> SegFormer:
    """SegFormer-B3: MiT-B3 encoder, decoder width 768. Arguments as ``segformer_b0``."""
    return _segformer("B3", num_classes, pretrained, backbone_pretrained, drop_path_rate, align_corners)


@MODELS.register
def segformer_b4(
    num_classes: int,
    pretrained: Optional[str] = None,
    backbone_pretrained: Optional[str] = None,
    drop_path_rate: float = 0.1,
    align_corners: bool = False,
) -> SegFormer:
    """SegFormer-B4: MiT-B4 encoder, decoder width 768. Arguments as ``segformer_b0``."""
    return _segformer("B4", num_classes, pretrained, backbone_pretrained, drop_path_rate, align_corners)


@MODELS.register
def segformer_b5(
    num_classes: int,
    pretrained: Optional[str] = None,
    backbone_pretrained: Optional[str] = None,
    drop_path_rate: float = 0.1,
    align_corners: bool = False,
) -> SegFormer:
    """SegFormer-B5: MiT-B5 encoder, decoder width 768. Arguments as ``segformer_b0``."""
    return _segformer("B5", num_classes, pretrained, backbone_pretrained, drop_path_rate, align_corners)
