"""RTFormer: real-time semantic segmentation with a dual-resolution transformer.

Paper: Jian Wang, Chenhui Gou, Qiman Wu, Haocheng Feng, Junyu Han, Errui Ding, Jingdong Wang,
"RTFormer: Efficient Design for Real-Time Semantic Segmentation with Transformer", NeurIPS 2022,
arXiv:2210.07124.

Upstream: PaddlePaddle/PaddleSeg, ``paddleseg/models/rtformer.py`` (Apache-2.0), the official code
and the source of the published weights. segkit's layers compute the same function with the same
tensors, so PaddleSeg checkpoints load through ``RTFormer.remap_checkpoint_keys``.

What differs from upstream:

* Structure and names: pre-activation ``NormActConv`` units, ``stem``/``stage1..3``/``block4..5``/
  ``dappm``/``head``/``aux_head`` instead of ``conv1``/``layer1..5``/``spp``/``seghead*``; the
  upstream names are translated once, in ``remap_checkpoint_keys``.
* Cross-resolution attention uses batched matrix products instead of a grouped convolution over
  a ``[1, N*C, H, W]`` reshape with ``groups=N``. It is the same arithmetic, but the batch size is
  no longer baked into the program, so the model exports with a dynamic batch dimension
  (PaddleSeg issues 3115, 3308, 3409).
* No in-place addition on a ReLU output in the block (upstream's ``x_h += ...``).
* The cross-resolution attention's adaptive max pooling is computed from slices and maxima
  (``layers.adaptive_max_pool2d``, the same values), so the ONNX export is exact at any size.
* ``pretrained`` loading is strict: only the DAPPM and the heads may be absent, and only keys
  outside the model's backbone (an ImageNet classifier) may be extra; upstream warns and carries on.
"""

import re
from typing import Dict, Sequence, Tuple

import numpy as np
import paddle
from paddle import nn
from paddle.nn import functional as F

from segkit.errors import ConfigError
from segkit.models.base import SegModel
from segkit.models.layers import GELU, AdaptiveMaxPool2D, Conv2D, DropPath, conv2d, softmax
from segkit.registry import MODELS
from segkit.weights import Tolerance

# Paddle's BatchNorm momentum weighs the *old* running value; upstream uses 0.1, so the running
# statistics follow the latest batch closely. Kept for identical training behaviour.
BN_MOMENTUM = 0.1


def batch_norm(channels: int, epsilon: float = 1e-5, lr_mult: float = 1.0) -> nn.BatchNorm2D:
    """BatchNorm2D with upstream's momentum and an optional learning-rate multiplier."""
    return nn.BatchNorm2D(
        channels,
        momentum=BN_MOMENTUM,
        epsilon=epsilon,
        weight_attr=paddle.ParamAttr(learning_rate=lr_mult),
        bias_attr=paddle.ParamAttr(learning_rate=lr_mult),
    )


def spatial_size(x: paddle.Tensor) -> paddle.Tensor:
    """The (H, W) of an NCHW tensor as a tensor, so exported programs keep H and W dynamic."""
    return paddle.shape(x)[2:]


class ConvNorm(nn.Layer):
    """Convolution, BatchNorm and optionally ReLU (the post-activation unit of the stem and shortcuts)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 bias: bool = False, act: bool = True):
        super().__init__()
        self.conv = conv2d(in_channels, out_channels, kernel_size, stride=stride, bias=bias)
        self.norm = batch_norm(out_channels)
        self.act = nn.ReLU() if act else nn.Identity()

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.act(self.norm(self.conv(x)))


class NormActConv(nn.Layer):
    """BatchNorm, optionally ReLU, then convolution (the pre-activation unit used everywhere else).

    Args:
        in_channels: input width.
        out_channels: output width.
        kernel_size: convolution kernel ('same' padding).
        stride: convolution stride.
        act: apply ReLU between the norm and the convolution.
        bias: give the convolution a bias.
        lr_mult: learning-rate multiplier of every parameter of the unit.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1,
                 act: bool = True, bias: bool = False, lr_mult: float = 1.0):
        super().__init__()
        self.norm = batch_norm(in_channels, lr_mult=lr_mult)
        self.act = nn.ReLU() if act else nn.Identity()
        self.conv = conv2d(in_channels, out_channels, kernel_size, stride=stride, bias=bias, lr_mult=lr_mult)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.conv(self.act(self.norm(x)))


class BasicBlock(nn.Layer):
    """The DDRNet / ResNet basic residual block (two 3x3 convolutions).

    Args:
        in_channels: input width.
        out_channels: output width.
        stride: stride of the first convolution (and of the projection shortcut).
        final_relu: apply ReLU after the residual sum; DDRNet leaves it off on a stage's last block
            because the next consumer applies its own.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, final_relu: bool = True):
        super().__init__()
        self.conv1 = conv2d(in_channels, out_channels, 3, stride=stride, bias=False)
        self.norm1 = batch_norm(out_channels)
        self.conv2 = conv2d(out_channels, out_channels, 3, bias=False)
        self.norm2 = batch_norm(out_channels)
        self.relu = nn.ReLU()
        self.final_relu = final_relu
        self.shortcut = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = ConvNorm(in_channels, out_channels, 1, stride, act=False)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        out = out + (x if self.shortcut is None else self.shortcut(x))
        return self.relu(out) if self.final_relu else out


def make_stage(in_channels: int, out_channels: int, depth: int, stride: int = 1) -> nn.Sequential:
    """``depth`` basic blocks; the first may change width and stride, the last ends without ReLU if depth > 1."""
    blocks = [BasicBlock(in_channels, out_channels, stride)]
    for index in range(1, depth):
        blocks.append(BasicBlock(out_channels, out_channels, final_relu=index < depth - 1))
    return nn.Sequential(*blocks)


class FFN(nn.Layer):
    """RTFormer's feed-forward network: BatchNorm, 3x3 conv, GELU, 3x3 conv (hidden width = input width).

    Args:
        channels: input, hidden and output width.
        drop_rate: dropout after each convolution.
    """

    def __init__(self, channels: int, drop_rate: float = 0.0):
        super().__init__()
        self.norm = batch_norm(channels, epsilon=1e-6)
        self.conv1 = Conv2D(channels, channels, 3, padding=1)
        self.act = GELU()
        self.conv2 = Conv2D(channels, channels, 3, padding=1)
        self.drop = nn.Dropout(drop_rate)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        x = self.drop(self.act(self.conv1(self.norm(x))))
        return self.drop(self.conv2(x))


class GPUFriendlyAttention(nn.Layer):
    """External attention with grouped double normalisation, on the low-resolution branch.

    Keys and values are learned 1x1 convolution weights (external memory of ``inter_channels``
    slots), so the cost is linear in the number of pixels. The similarity map is split into
    ``groups`` channel groups; it is softmax-normalised over the pixels and then divided by its sum
    over the slots of each group ("double normalisation"), without a multi-head split.

    Args:
        in_channels: input width.
        out_channels: output width.
        inter_channels: number of external memory slots.
        groups: channel groups of the double normalisation (upstream's ``num_heads``).
        stride: stride of the key projection (2 where the block halves the resolution).
    """

    def __init__(self, in_channels: int, out_channels: int, inter_channels: int, groups: int = 8,
                 stride: int = 1):
        super().__init__()
        if inter_channels % groups != 0:
            raise ConfigError(
                f"RTFormer attention: {inter_channels} memory slots cannot be split into {groups} groups "
                "(num_heads); choose num_heads dividing base_channels * 8."
            )
        self.groups = groups
        self.inter_channels = inter_channels
        self.stride = stride
        self.norm = batch_norm(in_channels)
        init = nn.initializer.Normal(std=0.001)
        self.key = self.create_parameter([inter_channels, in_channels, 1, 1], default_initializer=init)
        self.value = self.create_parameter([out_channels, inter_channels, 1, 1], default_initializer=init)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        attn = F.conv2d(self.norm(x), self.key, stride=self.stride)
        shape = paddle.shape(attn)
        attn = attn.reshape([0, self.groups, self.inter_channels // self.groups, -1])
        attn = softmax(attn)  # over axis 3, the last
        attn = attn / (attn.sum(axis=2, keepdim=True) + 1e-6)
        return F.conv2d(attn.reshape(shape), self.value)


class CrossResolutionAttention(nn.Layer):
    """Attention of the high-resolution branch over a pooled summary of the low-resolution one.

    The low-resolution features are normalised, max-pooled to ``cross_size x cross_size`` tokens
    and projected to per-sample keys and values (``high_channels`` each). Every high-resolution
    pixel attends over those tokens (softmax over tokens after scaling by tokens^-0.5). Batched
    matrix products keep the batch size out of the program (upstream uses a grouped convolution).

    Args:
        high_channels: width of the high-resolution branch (queries and output).
        low_channels: width of the low-resolution branch (source of keys and values).
        cross_size: side of the pooled token grid.
    """

    def __init__(self, high_channels: int, low_channels: int, cross_size: int = 12):
        super().__init__()
        self.num_tokens = cross_size * cross_size
        self.norm = batch_norm(high_channels)
        self.kv_norm = batch_norm(low_channels)
        self.kv_pool = AdaptiveMaxPool2D(cross_size)  # exact in ONNX too, any size
        self.kv_conv = conv2d(low_channels, 2 * high_channels, 1, bias=False)

    def forward(self, x_high: paddle.Tensor, x_low: paddle.Tensor) -> paddle.Tensor:
        key, value = paddle.split(self.kv_conv(self.kv_pool(self.kv_norm(x_low))), 2, axis=1)
        key = key.flatten(2)  # N, C, T
        value = value.flatten(2)  # N, C, T
        query = self.norm(x_high)
        attn = paddle.matmul(key, query.flatten(2), transpose_x=True)  # N, T, HW
        attn = F.softmax(attn * self.num_tokens**-0.5, axis=1)
        return paddle.matmul(value, attn).reshape(paddle.shape(query))


class RTFormerBlock(nn.Layer):
    """One dual-resolution RTFormer block.

    low  = shortcut(low) + DropPath(GPUFriendlyAttention(low));  low += DropPath(FFN(low))
    high = high + upsample(compress(low));  high += DropPath(CrossAttention(high, low))
    high += DropPath(FFN(high));  if injection: low += inject(high)

    Args:
        high_channels: width of the high-resolution branch (unchanged by the block).
        low_in_channels: input width of the low-resolution branch.
        low_out_channels: output width of the low-resolution branch; when it differs from the input
            width the block also halves the low branch's resolution.
        groups: channel groups of the GPU-friendly attention.
        drop_rate: dropout inside the FFNs.
        drop_path_rate: stochastic depth of every residual branch.
        use_injection: add the downsampled high-resolution output back into the low branch.
        cross_size: side of the token grid of the cross-resolution attention.
    """

    def __init__(self, high_channels: int, low_in_channels: int, low_out_channels: int, groups: int = 8,
                 drop_rate: float = 0.0, drop_path_rate: float = 0.0, use_injection: bool = True,
                 cross_size: int = 12):
        super().__init__()
        stride = 1 if low_in_channels == low_out_channels else 2
        self.low_shortcut = None
        if stride != 1:
            self.low_shortcut = NormActConv(low_in_channels, low_out_channels, 1, stride=2, act=False)
        self.low_attn = GPUFriendlyAttention(low_in_channels, low_out_channels, low_out_channels, groups, stride)
        self.low_ffn = FFN(low_out_channels, drop_rate)
        self.compress = NormActConv(low_out_channels, high_channels, 1)
        self.high_attn = CrossResolutionAttention(high_channels, low_out_channels, cross_size)
        self.high_ffn = FFN(high_channels, drop_rate)
        self.inject = None
        if use_injection:
            self.inject = nn.Sequential(
                NormActConv(high_channels, low_out_channels // 2, 3, stride=2),
                NormActConv(low_out_channels // 2, low_out_channels, 3, stride=2),
            )
        self.drop_path = DropPath(drop_path_rate)

    def forward(self, x_high: paddle.Tensor, x_low: paddle.Tensor) -> Tuple[paddle.Tensor, paddle.Tensor]:
        shortcut = x_low if self.low_shortcut is None else self.low_shortcut(x_low)
        x_low = shortcut + self.drop_path(self.low_attn(x_low))
        x_low = x_low + self.drop_path(self.low_ffn(x_low))

        x_high = x_high + F.interpolate(self.compress(x_low), size=spatial_size(x_high), mode="bilinear")
        x_high = x_high + self.drop_path(self.high_attn(x_high, x_low))
        x_high = x_high + self.drop_path(self.high_ffn(x_high))

        if self.inject is not None:
            x_low = x_low + self.inject(x_high)
        return x_high, x_low


class DAPPM(nn.Layer):
    """Deep Aggregation Pyramid Pooling Module (DDRNet).

    Five context scales (full resolution, avg-pool 5/2, 9/4, 17/8 with padding counted, and
    global) are each reduced to ``inter_channels``; scales 1-4 are upsampled, added to the previous
    refined scale and refined by a 3x3 unit (a hierarchical residual chain); all five are
    concatenated, fused and added to a shortcut.

    Args:
        in_channels: input width.
        inter_channels: width of each scale.
        out_channels: output width.
        lr_mult: learning-rate multiplier of the module's parameters.
    """

    def __init__(self, in_channels: int, inter_channels: int, out_channels: int, lr_mult: float = 1.0):
        super().__init__()
        self.pools = nn.LayerList([  # for scales 1-4; scale 0 sees the input as is
            nn.AvgPool2D(5, stride=2, padding=2, exclusive=False),
            nn.AvgPool2D(9, stride=4, padding=4, exclusive=False),
            nn.AvgPool2D(17, stride=8, padding=8, exclusive=False),
            nn.AdaptiveAvgPool2D(1),
        ])
        self.scales = nn.LayerList(
            [NormActConv(in_channels, inter_channels, 1, lr_mult=lr_mult) for _ in range(5)]
        )
        self.refine = nn.LayerList(
            [NormActConv(inter_channels, inter_channels, 3, lr_mult=lr_mult) for _ in range(4)]
        )
        self.fuse = NormActConv(5 * inter_channels, out_channels, 1, lr_mult=lr_mult)
        self.shortcut = NormActConv(in_channels, out_channels, 1, lr_mult=lr_mult)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        size = spatial_size(x)
        outs = [self.scales[0](x)]
        for pool, scale, refine in zip(self.pools, self.scales[1:], self.refine):
            context = F.interpolate(scale(pool(x)), size=size, mode="bilinear")
            outs.append(refine(context + outs[-1]))
        return self.fuse(paddle.concat(outs, axis=1)) + self.shortcut(x)


class SegHead(nn.Layer):
    """BN-ReLU-conv3x3 then BN-ReLU-conv1x1 classifier (with bias).

    Args:
        in_channels: input width.
        inter_channels: width of the 3x3 unit.
        num_classes: output classes.
        lr_mult: learning-rate multiplier of the head's parameters.
    """

    def __init__(self, *, in_channels: int, inter_channels: int, num_classes: int, lr_mult: float = 1.0):
        super().__init__()
        self.proj = NormActConv(in_channels, inter_channels, 3, lr_mult=lr_mult)
        self.classifier = NormActConv(inter_channels, num_classes, 1, bias=True, lr_mult=lr_mult)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.classifier(self.proj(x))


@MODELS.register
class RTFormer(SegModel):
    """RTFormer (its arguments are PaddleSeg's, so PaddleSeg's YAML files build it unchanged).

    Strides: stem 4 -> stage1 (c) 4 -> stage2 (2c) 8 -> stage3 (4c) 16. The high-resolution branch
    stays at stride 8 with 2c channels; block4 takes the low branch to stride 32 with 8c channels,
    block5 keeps it there. DAPPM on the low branch, upsampled and concatenated with the high branch,
    feeds the main head; the auxiliary head (training only) reads the stride-8 branch before block4.

    Args:
        num_classes: number of classes.
        layer_nums: basic blocks in stage1, stage2 and stage3 (a fourth entry is accepted and
            unused, as upstream).
        base_channels: width ``c`` of the first stage (32 Slim, 64 Base).
        spp_channels: width of each DAPPM scale.
        num_heads: channel groups of the GPU-friendly attention's double normalisation.
        head_channels: hidden width of the auxiliary head; the main head uses twice this.
        drop_rate: dropout inside the FFNs.
        drop_path_rate: stochastic depth of the RTFormer blocks' residual branches.
        use_aux_head: build the auxiliary head (then training returns [main, aux]).
        use_injection: per RTFormer block (block4, block5), inject high-resolution features into
            the low branch.
        lr_mult: learning-rate multiplier of DAPPM and the heads (upstream default 10; set 1.0 when
            the optimizer's ``custom_cfg`` applies the multiplier instead).
        cross_size: side of the pooled token grid of cross-resolution attention (12; 8 for ADE20K).
        in_channels: input image channels.

    Pretrained weights are ImageNet weights (PaddleSeg or segkit names) for everything but DAPPM and
    the heads (``pretrained_tolerance``): those may be absent, or of another shape in a segmentation
    checkpoint with another number of classes, and then keep their initial values; keys outside the
    model (an ImageNet classifier) are dropped. Every backbone tensor must be present with the right
    shape.
    """

    # DAPPM and the heads are not part of the ImageNet-pretrained backbone.
    pretrained_tolerance = Tolerance(missing=("dappm", "head", "aux_head"), shape_mismatch=("dappm", "head", "aux_head"),
                                     unexpected=("aux_head",), foreign=True)
    # Paddle's resize kernel in training too: gradients then match PaddleSeg's to the bit where the
    # parity test needs it (the bias of a convolution before BN has a gradient of rounding noise).
    matrix_resize_in_training = False

    def __init__(
        self,
        *,
        num_classes: int,
        layer_nums: Sequence[int] = (2, 2, 2, 2),
        base_channels: int = 64,
        spp_channels: int = 128,
        num_heads: int = 8,
        head_channels: int = 128,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.2,
        use_aux_head: bool = True,
        use_injection: Sequence[bool] = (True, True),
        lr_mult: float = 10.0,
        cross_size: int = 12,
        in_channels: int = 3,
    ):
        super().__init__()
        if len(layer_nums) < 3 or len(use_injection) != 2:
            raise ConfigError(
                f"RTFormer: layer_nums needs 3 (or 4) stage depths and use_injection 2 flags, got "
                f"layer_nums={list(layer_nums)}, use_injection={list(use_injection)}."
            )
        c = base_channels
        self.num_classes = num_classes
        self.num_outputs = 2 if use_aux_head else 1

        self.stem = nn.Sequential(
            ConvNorm(in_channels, c, 3, stride=2, bias=True),
            ConvNorm(c, c, 3, stride=2, bias=True),
        )
        self.stage1 = make_stage(c, c, layer_nums[0])
        self.stage2 = make_stage(c, 2 * c, layer_nums[1], stride=2)
        self.stage3 = make_stage(2 * c, 4 * c, layer_nums[2], stride=2)
        self.compress3 = NormActConv(4 * c, 2 * c, 1)
        self.stage3_high = make_stage(2 * c, 2 * c, 1)
        block_args = dict(groups=num_heads, drop_rate=drop_rate, drop_path_rate=drop_path_rate,
                          cross_size=cross_size)
        self.block4 = RTFormerBlock(2 * c, 4 * c, 8 * c, use_injection=use_injection[0], **block_args)
        self.block5 = RTFormerBlock(2 * c, 8 * c, 8 * c, use_injection=use_injection[1], **block_args)
        self.dappm = DAPPM(8 * c, spp_channels, 2 * c, lr_mult=lr_mult)
        self.head = SegHead(in_channels=4 * c, inter_channels=2 * head_channels, num_classes=num_classes, lr_mult=lr_mult)
        self.aux_head = (SegHead(in_channels=2 * c, inter_channels=head_channels, num_classes=num_classes, lr_mult=lr_mult)
                         if use_aux_head else None)
        self.relu = nn.ReLU()

        self._init_weights()

    def _init_weights(self) -> None:
        """Upstream's scheme: Kaiming-normal convolutions with zero bias, BN weight 1 / bias 0,
        truncated-normal (0.02) key/value projections of cross attention; the external memories
        of the GPU-friendly attention keep their N(0, 0.001) initialiser."""
        kaiming = nn.initializer.KaimingNormal()
        zeros = nn.initializer.Constant(0.0)
        for layer in self.sublayers():
            if isinstance(layer, nn.Conv2D):
                kaiming(layer.weight)
                if layer.bias is not None:
                    zeros(layer.bias)
            elif isinstance(layer, CrossResolutionAttention):
                nn.initializer.TruncatedNormal(std=0.02)(layer.kv_conv.weight)

    def forward(self, x: paddle.Tensor):
        x1 = self.stage1(self.stem(x))  # c, stride 4
        x2 = self.stage2(self.relu(x1))  # 2c, stride 8
        x3 = self.stage3(self.relu(x2))  # 4c, stride 16
        high = x2 + F.interpolate(self.compress3(x3), size=spatial_size(x2), mode="bilinear")
        high = self.stage3_high(self.relu(high))  # 2c, stride 8

        high4, low4 = self.block4(self.relu(high), self.relu(x3))  # 2c / 8, 8c / 32
        high5, low5 = self.block5(self.relu(high4), self.relu(low4))

        context = F.interpolate(self.dappm(low5), size=spatial_size(high5), mode="bilinear")
        logits = [self.head(paddle.concat([high5, context], axis=1))]
        if self.training and self.aux_head is not None:
            logits.append(self.aux_head(high))
        size = spatial_size(x)
        return self.outputs([self.resize_output(logit, size) for logit in logits])

    @staticmethod
    def remap_checkpoint_keys(state: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Translate PaddleSeg RTFormer keys to segkit's; segkit and unknown keys pass unchanged."""
        return {remap_rtformer_key(key): value for key, value in state.items()}


# PaddleSeg name -> segkit name. Applied in order, each at most once, on the whole key; no output
# matches any pattern, so the mapping is idempotent on segkit keys.
_BLOCK_PARTS = [
    (r"attn_shortcut_l\.0\.", "low_shortcut.norm."),
    (r"attn_shortcut_l\.1\.", "low_shortcut.conv."),
    (r"attn_l\.norm\.", "low_attn.norm."),
    (r"attn_l\.k$", "low_attn.key"),
    (r"attn_l\.v$", "low_attn.value"),
    (r"mlp_l\.", "low_ffn."),
    (r"compression\.0\.", "compress.norm."),
    (r"compression\.2\.", "compress.conv."),
    (r"attn_h\.norm\.", "high_attn.norm."),
    (r"cross_kv\.0\.", "high_attn.kv_norm."),
    (r"cross_kv\.2\.", "high_attn.kv_conv."),
    (r"mlp_h\.", "high_ffn."),
    (r"down\.0\.", "inject.0.norm."),
    (r"down\.2\.", "inject.0.conv."),
    (r"down\.3\.", "inject.1.norm."),
    (r"down\.5\.", "inject.1.conv."),
]
_DAPPM_PARTS = (
    [(r"scale0\.0\.", "scales.0.norm."), (r"scale0\.2\.", "scales.0.conv.")]
    + [(rf"scale{i}\.1\.", f"scales.{i}.norm.") for i in range(1, 5)]
    + [(rf"scale{i}\.3\.", f"scales.{i}.conv.") for i in range(1, 5)]
    + [(rf"process{i}\.0\.", f"refine.{i - 1}.norm.") for i in range(1, 5)]
    + [(rf"process{i}\.2\.", f"refine.{i - 1}.conv.") for i in range(1, 5)]
    + [(r"compression\.0\.", "fuse.norm."), (r"compression\.2\.", "fuse.conv."),
       (r"shortcut\.0\.", "shortcut.norm."), (r"shortcut\.2\.", "shortcut.conv.")]
)
_HEAD_PARTS = [(r"bn1\.", "proj.norm."), (r"conv1\.", "proj.conv."),
               (r"bn2\.", "classifier.norm."), (r"conv2\.", "classifier.conv.")]
_STAGE_BLOCK_PARTS = [(r"bn1\.", "norm1."), (r"bn2\.", "norm2."),
                      (r"downsample\.0\.", "shortcut.conv."), (r"downsample\.1\.", "shortcut.norm.")]

# (upstream top-level pattern, segkit prefix, renames of the remainder)
_TOP_LEVEL = [
    (r"conv1\.0\.", "stem.0.conv.", []),
    (r"conv1\.1\.", "stem.0.norm.", []),
    (r"conv1\.3\.", "stem.1.conv.", []),
    (r"conv1\.4\.", "stem.1.norm.", []),
    (r"layer3_\.(\d+)\.", r"stage3_high.\1.", _STAGE_BLOCK_PARTS),
    (r"layer([123])\.(\d+)\.", r"stage\1.\2.", _STAGE_BLOCK_PARTS),
    (r"compression3\.0\.", "compress3.norm.", []),
    (r"compression3\.2\.", "compress3.conv.", []),
    (r"layer([45])\.", r"block\1.", _BLOCK_PARTS),
    (r"spp\.", "dappm.", _DAPPM_PARTS),
    (r"seghead_extra\.", "aux_head.", _HEAD_PARTS),
    (r"seghead\.", "head.", _HEAD_PARTS),
]


def remap_rtformer_key(key: str) -> str:
    """Translate one PaddleSeg RTFormer parameter name to segkit's (unknown names are returned as is)."""
    for pattern, prefix, parts in _TOP_LEVEL:
        match = re.match(pattern, key)
        if match is None:
            continue
        rest = key[match.end():]
        for part, replacement in parts:
            renamed, count = re.subn("^" + part, replacement, rest)
            if count:
                rest = renamed
                break
        return match.expand(prefix) + rest
    return key


def _variant(num_classes: int, base_channels: int, head_channels: int,
             use_injection: Sequence[bool], cross_size: int, drop_path_rate: float, lr_mult: float) -> RTFormer:
    return RTFormer(num_classes=num_classes, base_channels=base_channels, head_channels=head_channels,
                    use_injection=list(use_injection), cross_size=cross_size, drop_path_rate=drop_path_rate,
                    lr_mult=lr_mult)


@MODELS.register
def rtformer_slim(*, num_classes: int, use_injection: Sequence[bool] = (True, True),
                  cross_size: int = 12, drop_path_rate: float = 0.2, lr_mult: float = 10.0) -> RTFormer:
    """RTFormer-Slim: base 32, head 64 (4.8M parameters in the paper; 5.40M with the aux head at 19 classes)."""
    return _variant(num_classes, 32, 64, use_injection, cross_size, drop_path_rate, lr_mult)


@MODELS.register
def rtformer_base(*, num_classes: int, use_injection: Sequence[bool] = (True, False),
                  cross_size: int = 12, drop_path_rate: float = 0.2, lr_mult: float = 10.0) -> RTFormer:
    """RTFormer-Base: base 64, head 128, injection only in block4 (16.8M in the paper; 17.92M at 19 classes)."""
    return _variant(num_classes, 64, 128, use_injection, cross_size, drop_path_rate, lr_mult)
