"""Building blocks shared by several model families."""

import contextlib
import functools
import math
from typing import Iterable, Iterator, Optional, Sequence, Union

import numpy as np
import paddle
from paddle import nn
from paddle.autograd import PyLayer

from segkit import ops


def drop_path(x: paddle.Tensor, rate: float, training: bool) -> paddle.Tensor:
    """Stochastic depth: zero whole samples of a residual branch with probability ``rate``.

    The mask is one ``paddle.rand([N, 1, ..., 1])`` draw in float32, as PaddleSeg draws it, so seeded
    training runs draw the same random numbers (also under mixed precision).
    """
    if rate == 0.0 or not training:
        return x
    keep = 1.0 - rate
    mask = paddle.floor(keep + paddle.rand([x.shape[0]] + [1] * (x.ndim - 1)).astype(x.dtype))
    return x / keep * mask


_SEGKIT_KERNELS = [True]  # segkit's CPU rewrites on (switched off by paddle_kernels)


@contextlib.contextmanager
def paddle_kernels() -> Iterator[None]:
    """Inside the block, Paddle's own kernels run: ``resize_bilinear`` calls Paddle's resize, never
    segkit's operator or matrix products, ``conv2d_nchw`` Paddle's convolution, ``softmax``, ``gelu``,
    ``LayerNorm``, ``attention`` and ``CrossEntropyLoss`` Paddle's kernels, never oneDNN, and the bias
    adds (``add_bias``, ``add_channel_bias``, ``Linear``) Paddle's broadcast gradient. For
    ``segkit.complexity``, which counts ``F.conv2d`` calls and leaves resizes out as the papers do,
    and for tests comparing the two."""
    _SEGKIT_KERNELS[0] = False
    try:
        yield
    finally:
        _SEGKIT_KERNELS[0] = True


def _segkit_kernels_apply(x: paddle.Tensor) -> bool:
    """Whether segkit's CPU rewrites of Paddle's kernels may run on ``x``: dygraph, float32 on the CPU,
    no mixed precision, and not inside ``paddle_kernels()``."""
    tracer = paddle.base.framework._dygraph_tracer()
    return (_SEGKIT_KERNELS[0] and paddle.in_dynamic_mode() and x.dtype == paddle.float32 and x.place.is_cpu_place()
            and tracer._amp_level == paddle.base.core.AmpLevel.O0)


class _AddBias(PyLayer):
    """``x + bias`` whose bias gradient is a matrix product with a ones vector.

    ``channels_first`` False: ``x`` is (..., C), the bias runs along the last axis (tokens).
    True: ``x`` is (N, C, L), the bias runs along axis 1 (NCHW maps flattened by ``_per_channel``).
    """

    @staticmethod
    def forward(ctx, x: paddle.Tensor, bias: paddle.Tensor, channels_first: bool) -> paddle.Tensor:
        ctx.channels_first = channels_first
        ctx.x_needs_grad = not x.stop_gradient  # Paddle wants None as the gradient of a stop_gradient x
        return x + (bias.reshape([-1, 1]) if channels_first else bias)

    @staticmethod
    def backward(ctx, grad: paddle.Tensor):
        if ctx.channels_first:  # (N, C, L): sum over L by a product, then over the few N
            n, c, length = grad.shape
            per_sample = paddle.matmul(grad.reshape([n * c, length]), paddle.ones([length, 1], dtype=grad.dtype))
            bias_grad = per_sample.reshape([n, c]).sum(axis=0)
        else:
            rows = grad.reshape([-1, grad.shape[-1]])
            bias_grad = paddle.matmul(paddle.ones([1, rows.shape[0]], dtype=grad.dtype), rows).reshape([-1])
        return grad if ctx.x_needs_grad else None, bias_grad


# Below these sizes of ``x`` the PyLayer's fixed cost (about 0.2 ms) outweighs the faster sum (forward +
# backward, 2 threads: a token bias on 2x256x256 0.87 ms plain vs 0.99, on 2x1024x160 1.25 vs 0.99;
# a channel bias on [N, C, H*W] 2x32x64x64 0.91 vs 0.95, 2x128x64x64 2.40 vs 2.22).
TOKEN_BIAS_MIN_SIZE = 1 << 18
CHANNEL_BIAS_MIN_SIZE = 1 << 20


def _bias_by_product(x: paddle.Tensor, bias: paddle.Tensor, min_size: int = 0) -> bool:
    """Whether ``_AddBias`` should add ``bias`` to ``x``: segkit's rewrites apply to ``x`` (dygraph,
    float32 on the CPU, no mixed precision), the step needs the bias gradient and ``x`` has at least
    ``min_size`` elements."""
    return paddle.is_grad_enabled() and not bias.stop_gradient and _segkit_kernels_apply(x) and x.size >= min_size


def add_bias(x: paddle.Tensor, bias: paddle.Tensor) -> paddle.Tensor:
    """``x + bias`` for tokens (..., C) and a bias (C,).

    Paddle's CPU backward of that broadcast sums the gradient's columns on one thread, about 25x
    slower than a matrix product with a ones vector; in dygraph training the sum is that product
    (same values up to the order of the float sums) when ``x`` has ``TOKEN_BIAS_MIN_SIZE`` elements
    or more. Elsewhere (smaller ``x``, no gradient, traced programs, GPU, other dtypes, mixed
    precision, inside ``paddle_kernels()``) it is Paddle's plain add.
    """
    if _bias_by_product(x, bias, TOKEN_BIAS_MIN_SIZE):
        return _AddBias.apply(x, bias, False)
    return x + bias


class _Sum(PyLayer):
    """The sum of same-shaped tensors, left to right; the backward hands the output gradient to every input."""

    @staticmethod
    def forward(ctx, *tensors: paddle.Tensor) -> paddle.Tensor:
        ctx.needs_grad = [not t.stop_gradient for t in tensors]
        out = tensors[0] + tensors[1]
        for t in tensors[2:]:
            out.add_(t)
        return out

    @staticmethod
    def backward(ctx, grad: paddle.Tensor):
        return tuple(grad if needed else None for needed in ctx.needs_grad)


def add_all(tensors: Iterable[paddle.Tensor]) -> paddle.Tensor:
    """``((t0 + t1) + t2) + ...`` for tensors of one shape, the same values bit for bit.

    Paddle's backward of each ``a + b`` copies the output gradient into both inputs' gradients (a
    pass over the map each, 16 ms for a 2x256x128x128 map); in dygraph training the sum is one
    ``PyLayer`` whose backward passes the gradient on without copies (four such maps, forward +
    backward: 141 -> 77 ms). Elsewhere the tensors are added one by one as they come, so a
    generator never holds more than two of them (evaluation at full resolution).
    """
    tensors = iter(tensors)
    first = next(tensors)
    if paddle.is_grad_enabled() and _segkit_kernels_apply(first):
        rest = list(tensors)
        return _Sum.apply(first, *rest) if rest else first
    return functools.reduce(paddle.add, tensors, first)


def _per_channel(x: paddle.Tensor, values: paddle.Tensor, op) -> paddle.Tensor:
    """``op(x, values)`` with one value per channel of an NCHW ``x``, computed on ``[N, C, H*W]``.

    Paddle's CPU broadcasting over ``[N, C, H, W]`` and ``[1, C, 1, 1]`` (and the reduction for the
    gradient of ``values``) is about 4x slower than over ``[N, C, H*W]`` and ``[C, 1]``: forward and
    backward of a bias add on a 2x256x128x128 map took 759 ms against 179 ms, with the same values
    bit for bit. In a traced program (export) the plain broadcast is kept: shapes may be unknown
    there, and the inference passes fuse the bias into the convolution anyway.
    """
    if not paddle.in_dynamic_mode() or x.ndim != 4:
        return op(x, values.reshape([1, -1, 1, 1]))
    n, c, h, w = x.shape
    return op(x.reshape([n, c, h * w]), values.reshape([c, 1])).reshape([n, c, h, w])


def add_channel_bias(x: paddle.Tensor, bias: paddle.Tensor) -> paddle.Tensor:
    """``x + bias[None, :, None, None]`` for an NCHW ``x``, by the fast layout of ``_per_channel``; in
    dygraph training on maps of ``CHANNEL_BIAS_MIN_SIZE`` elements or more the bias gradient is a
    matrix product (``_AddBias``), as in ``add_bias``."""
    if x.ndim == 4 and _bias_by_product(x, bias, CHANNEL_BIAS_MIN_SIZE):
        n, c, h, w = x.shape
        return _AddBias.apply(x.reshape([n, c, h * w]), bias.reshape([c]), True).reshape([n, c, h, w])
    return _per_channel(x, bias, paddle.add)


def scale_channels(x: paddle.Tensor, scale: paddle.Tensor) -> paddle.Tensor:
    """``x * scale`` for an NCHW ``x`` and ``C`` scales of any shape, by the fast layout of ``_per_channel``."""
    return _per_channel(x, scale, paddle.multiply)


def _symmetric_padding(padding) -> Optional[list]:
    """``[pad_h, pad_w]`` from a conv's integer padding, or None for string or asymmetric padding."""
    if isinstance(padding, int):
        return [padding, padding]
    if isinstance(padding, str) or not all(isinstance(p, int) for p in padding):
        return None
    padding = list(padding)
    if len(padding) == 4 and padding[0::2] == padding[1::2]:  # [top, bottom, left, right]
        return padding[0::2]
    return padding if len(padding) == 2 else None


def conv2d_nchw(x: paddle.Tensor, weight: paddle.Tensor, bias: Optional[paddle.Tensor] = None,
                stride: Union[int, Sequence[int]] = 1, padding: Union[int, Sequence[int]] = 0,
                dilation: Union[int, Sequence[int]] = 1, groups: int = 1) -> paddle.Tensor:
    """``F.conv2d`` on NCHW: by oneDNN in dygraph on the CPU (``segkit.ops``), else Paddle's convolution
    with the bias added by ``add_channel_bias``. Values agree to float rounding (oneDNN sums in
    another order: relative differences of 1e-7 to 1e-6).

    1x1 convolutions with stride 1 stay on Paddle's: they are one GEMM there on the NCHW data, while
    oneDNN reorders the data into its own layout and back (forward + backward of a 1x1 convolution
    256 -> 256 channels on 128x128: 154 ms against 186).
    """
    pads = _symmetric_padding(padding)
    pointwise = weight.shape[2:] == [1, 1] and stride in (1, [1, 1], (1, 1))  # a GEMM: Paddle's is faster
    if pads is not None and not pointwise and x.ndim == 4 and _segkit_kernels_apply(x) and ops.available():
        return ops.conv2d(x, weight, bias, stride, pads, dilation, groups)
    out = nn.functional.conv2d(x, weight, None, stride=stride, padding=padding, dilation=dilation, groups=groups)
    return out if bias is None else add_channel_bias(out, bias)


class Conv2D(nn.Conv2D):
    """``paddle.nn.Conv2D`` computed by ``conv2d_nchw``: same parameters, names and values (checkpoints
    load unchanged), the same output to float rounding, a faster forward and backward on the CPU.

    With ``data_format="NHWC"`` a depth-wise convolution runs on the NHWC data by oneDNN in dygraph on the
    CPU (no reorders: forward / backward of a 3x3 on 64 channels at 128x128 0.82 / 2.43 ms against 1.61 /
    3.55 ms on NCHW, 2 threads); elsewhere, and for other NHWC convolutions, it is ``conv2d_nchw``
    between two transposes, so traced programs only hold NCHW convolutions (which every exporter maps).
    """

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        if self._padding_mode != "zeros" or self._data_format not in ("NCHW", "NHWC"):
            return super().forward(x)
        if self._data_format == "NCHW":
            return conv2d_nchw(x, self.weight, self.bias, stride=self._stride, padding=self._padding,
                               dilation=self._dilation, groups=self._groups)
        pads = _symmetric_padding(self._padding)
        if self._groups == self._in_channels == self._out_channels and pads is not None and onednn_applies(x):
            return ops.conv2d(x, self.weight, self.bias, self._stride, pads, self._dilation, self._groups,
                              channels_last=True)
        out = conv2d_nchw(x.transpose([0, 3, 1, 2]), self.weight, self.bias, stride=self._stride,
                          padding=self._padding, dilation=self._dilation, groups=self._groups)
        return out.transpose([0, 2, 3, 1])


class Linear(nn.Linear):
    """``paddle.nn.Linear`` computed by ``linear``: the bias gradient is a matrix product in dygraph training
    on the CPU, and without gradients the bias is added inside oneDNN's product.

    Same parameters, names and values (checkpoints load unchanged) and the same output to float
    rounding. Elsewhere (a frozen or absent bias in training, traced programs, GPU, mixed precision,
    other dtypes) it is Paddle's ``F.linear``.
    """

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return linear(x, self.weight, self.bias)


def linear(x: paddle.Tensor, weight: paddle.Tensor, bias: Optional[paddle.Tensor] = None) -> paddle.Tensor:
    """``F.linear(x, weight, bias)``: in dygraph training on the CPU ``x @ weight`` then ``add_bias``; where
    nothing needs a gradient and ``segkit.ops`` runs, one oneDNN product with the bias added in its
    epilogue (Paddle adds it in a second, single-threaded pass: HRViT-b1's linears took 169 ms of a 512x512
    forward); elsewhere (traced programs, GPU, mixed precision, ``paddle_kernels()``) Paddle's."""
    if bias is not None and _bias_by_product(x, bias):
        return add_bias(paddle.matmul(x, weight), bias)
    no_gradient = not paddle.is_grad_enabled() or all(t is None or t.stop_gradient for t in (x, weight, bias))
    if no_gradient and onednn_applies(x):
        return ops.linear(x, weight, bias)
    return nn.functional.linear(x, weight, bias)


# ``conv2d(..., std=FAN_OUT)``: weights from Normal(0, sqrt(2 / fan_out)), as mmseg and the official
# SegNeXt code initialise their convolutions.
FAN_OUT = "fan_out"


def conv2d(in_channels: int, out_channels: int, kernel_size: Union[int, Sequence[int]], *, stride: int = 1,
           groups: int = 1, bias: bool = True, lr_mult: float = 1.0,
           std: Optional[Union[float, str]] = None) -> Conv2D:
    """A Conv2D padded to keep the size (``kernel // 2`` per side), with its initialiser and learning rate.

    The initialiser is given at construction, so each weight is drawn once (large variants build twice
    as fast as re-initialising Paddle's defaults).

    Args:
        in_channels: input width.
        out_channels: output width.
        kernel_size: square side, or (height, width).
        stride: the stride.
        groups: channel groups (``in_channels`` for a depth-wise convolution).
        bias: give the convolution a bias.
        lr_mult: learning-rate multiplier of its parameters.
        std: None keeps Paddle's default initialisers; ``FAN_OUT`` draws the weight from Normal(0,
            sqrt(2 / fan_out)) with fan_out per group, a number from Normal(0, std); both zero the bias.
    """
    kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
    weight_init = bias_init = None
    if std is not None:
        std = math.sqrt(2.0 / (kh * kw * out_channels // groups)) if std == FAN_OUT else std
        weight_init, bias_init = nn.initializer.Normal(0.0, std), nn.initializer.Constant(0.0)
    return Conv2D(
        in_channels, out_channels, (kh, kw), stride=stride, padding=(kh // 2, kw // 2), groups=groups,
        weight_attr=paddle.ParamAttr(initializer=weight_init, learning_rate=lr_mult),
        bias_attr=paddle.ParamAttr(initializer=bias_init, learning_rate=lr_mult) if bias else False,
    )


@functools.lru_cache(maxsize=64)
def _bilinear_taps(n_in: int, n_out: int, align_corners: bool, rows: bool) -> np.ndarray:
    """``[n_out, 3]`` float32: for each output row (height) or column of a 1-D bilinear resize, the low
    and high source index and the weight of the high one, computed as Paddle's CPU kernel computes
    them (``align_mode`` 0: half-pixel centres, clamped; for rows it computes the centre in double)."""
    dst = np.arange(n_out)
    position = dst.astype(np.float32)
    if n_out == 1:
        src = np.zeros(1, np.float32)
    elif align_corners:
        src = np.float32(n_in - 1) / np.float32(n_out - 1) * position
    elif rows:
        ratio = np.float64(np.float32(n_in) / np.float32(n_out))
        src = np.maximum(ratio * (dst + 0.5) - 0.5, 0).astype(np.float32)
    else:
        ratio = np.float32(n_in) / np.float32(n_out)
        src = np.maximum(ratio * (position + np.float32(0.5)) - np.float32(0.5), np.float32(0))
    low = src.astype(np.int64)
    high = np.minimum(low + 1, n_in - 1)
    return np.stack([low, high, src - low.astype(np.float32)], axis=1).astype(np.float32)


@functools.lru_cache(maxsize=64)
def _bilinear_matrix(n_in: int, n_out: int, align_corners: bool, rows: bool) -> np.ndarray:
    """``[n_out, n_in]`` weights of a 1-D bilinear resize (``_bilinear_taps`` as a matrix)."""
    taps = _bilinear_taps(n_in, n_out, align_corners, rows)
    low, high, weight = taps[:, 0].astype(np.int64), taps[:, 1].astype(np.int64), taps[:, 2]
    matrix = np.zeros((n_out, n_in), np.float32)
    np.add.at(matrix, (np.arange(n_out), low), np.float32(1) - weight)
    np.add.at(matrix, (np.arange(n_out), high), weight)
    return matrix


def resize_bilinear(x: paddle.Tensor, size: Union[Sequence[int], paddle.Tensor],
                    align_corners: bool = False) -> paddle.Tensor:
    """``F.interpolate(x, size, mode="bilinear", align_corners=...)`` for NCHW float32 ``x``.

    Paddle's bilinear kernel runs on one thread, and its backward even slower. In dygraph on the CPU
    segkit resizes by ``segkit.ops.resize_bilinear`` (two passes of two taps per output, every image
    plane in parallel, with its gradient) where the operators are built, else by two matrix products
    with the interpolation weights (rows times ``x`` times columns), which use every thread too. The
    weights are the kernel's to the bit (``_bilinear_taps``); the values agree to float rounding (the
    kernel sums four products per output, both rewrites two per axis; against a float64 reference
    the products were 2e-7 off, the kernel 6e-6). Forward + backward of the training loss's 4x
    upsampling of 2x150x128x128 logits: see ``benchmarks/bench_layers.py``. Elsewhere (GPU, traced
    programs, mixed precision, other dtypes) Paddle's kernel is used.
    """
    if x.ndim != 4 or not _segkit_kernels_apply(x):
        return nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=align_corners)
    height, width = (int(s) for s in (size.tolist() if isinstance(size, paddle.Tensor) else size))
    if ops.available():
        return ops.resize_bilinear(x, paddle.to_tensor(_bilinear_taps(x.shape[2], height, align_corners, rows=True)),
                                   paddle.to_tensor(_bilinear_taps(x.shape[3], width, align_corners, rows=False)))
    rows = paddle.to_tensor(_bilinear_matrix(x.shape[2], height, align_corners, rows=True))
    cols = paddle.to_tensor(_bilinear_matrix(x.shape[3], width, align_corners, rows=False).T)
    if x.shape[2] * width * (x.shape[3] + height) <= height * x.shape[3] * (x.shape[2] + width):
        return paddle.matmul(rows, paddle.matmul(x, cols))  # columns first: the cheaper order here
    return paddle.matmul(paddle.matmul(rows, x), cols)


def upsample_nearest(x: paddle.Tensor, factor: int, size: Sequence[int]) -> paddle.Tensor:
    """NCHW ``x`` upsampled by nearest neighbours by the integer ``factor`` and cropped to ``size``:
    ``F.interpolate(x, size=[H * factor, W * factor], mode="nearest")[:, :, :size[0], :size[1]]``.

    Paddle's nearest kernel and its gradient run on one thread (HRViT's up paths: 29 ms of a forward),
    and the crop's gradient writes a zero-filled full-size map. In dygraph on the CPU where
    ``segkit.ops`` is built the result is ``segkit.ops.resize_bilinear`` with taps ``i // factor``
    (weight 0: the same values bit for bit, gradients to float rounding, every plane in parallel, the
    crop included). Elsewhere (traced programs, GPU, ``paddle_kernels()``) it is Paddle's kernel and a
    slice; the output size is given rather than ``scale_factor``, whose float-array attribute
    Paddle2ONNX and Paddle Inference's oneDNN passes reject.
    """
    if x.ndim == 4 and onednn_applies(x):
        taps = [paddle.to_tensor(np.stack([np.arange(n) // factor] * 2 + [np.zeros(n)], axis=1).astype(np.float32))
                for n in (int(size[0]), int(size[1]))]
        return ops.resize_bilinear(x, *taps)
    x = nn.functional.interpolate(x, size=paddle.shape(x)[2:] * factor, mode="nearest")
    return x[:, :, : size[0], : size[1]]


class DropPath(nn.Layer):
    """``drop_path`` as a layer.

    Args:
        rate: probability of dropping the branch of one sample.
    """

    def __init__(self, rate: float = 0.0):
        super().__init__()
        self.rate = float(rate)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return drop_path(x, self.rate, self.training)

    def extra_repr(self) -> str:
        return f"rate={self.rate}"


class Dropout2D(nn.Dropout2D):
    """``paddle.nn.Dropout2D``: the same random draw and the same values, computed as one product in
    dygraph on the CPU.

    Paddle scales the whole map by ``1 / (1 - p)``, casts it to its own dtype (a copy) and multiplies
    it by a ``[N, C, 1, 1]`` mask, and the backward retraces all three over the map. Here the scale is
    folded into the ``N * C`` mask values (``0`` or ``1 / (1 - p)``, the same products bit for bit)
    and the map is multiplied once, as ``[N * C, H * W]`` by ``[N * C, 1]``. Eval, other layouts,
    traced programs and ``p`` of 0 or 1 run Paddle's.
    """

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        if not self.applies(x):
            return super().forward(x)
        n, c, h, w = x.shape
        return (x.reshape([n * c, h * w]) * self.channel_mask(x).reshape([n * c, 1])).reshape([n, c, h, w])

    def applies(self, x: paddle.Tensor) -> bool:
        """Whether segkit's computation runs on ``x``: training, 0 < p < 1, NCHW, segkit's CPU rewrites on."""
        return (self.training and self.p not in (0, 1) and self.data_format == "NCHW" and x.ndim == 4
                and _segkit_kernels_apply(x))

    def channel_mask(self, x: paddle.Tensor) -> paddle.Tensor:
        """``[N, C]``: 0 for a dropped channel, else ``1 / (1 - p)``, from Paddle's own draw (same RNG use)."""
        n, c = x.shape[:2]
        draw = paddle.uniform([n, c, 1, 1], dtype="float32", min=0.0, max=1.0)
        return (draw >= self.p).astype(x.dtype).reshape([n, c]) * (1.0 / (1.0 - self.p))


def dropout_pointwise(x: paddle.Tensor, dropout: nn.Layer, conv: nn.Conv2D) -> paddle.Tensor:
    """``conv(dropout(x))`` for a classifier: a 1x1 convolution (stride 1, one group) after channel dropout.

    Where ``Dropout2D`` computes (training on the CPU), the dropped and rescaled channels are folded
    into per-sample copies of the tiny 1x1 weight and the map goes through one batched product,
    with no pass of its own over the map: SegFormer-B0's 2x256x128x128 -> 150 classes, forward +
    backward, 224 -> 136 ms. The random draw is ``Dropout2D``'s; values agree to float rounding
    (the mask multiplies the weight instead of the map). Elsewhere it is ``conv(dropout(x))``.
    """
    pointwise = (conv.weight.shape[2:] == [1, 1] and list(conv._stride) == [1, 1] and conv._padding in (0, [0, 0])
                 and conv._groups == 1 and conv._data_format == "NCHW")
    if not (pointwise and isinstance(dropout, Dropout2D) and dropout.applies(x)):
        return conv(dropout(x))
    n, c, h, w = x.shape
    weights = conv.weight.reshape([1, -1, c]) * dropout.channel_mask(x).unsqueeze(1)  # [N, classes, C]
    out = paddle.bmm(weights, x.reshape([n, c, h * w])).reshape([n, -1, h, w])
    return out if conv.bias is None else add_channel_bias(out, conv.bias)


def _bin_max(x: paddle.Tensor, bins: int, axis: int) -> paddle.Tensor:
    """Max over ``bins`` adaptive bins along ``axis``: bin i spans [floor(i L / bins), ceil((i + 1) L / bins))."""
    length = x.shape[axis] if paddle.in_dynamic_mode() else paddle.shape(x)[axis]  # a tensor when traced
    pieces = []
    for i in range(bins):
        start = (i * length) // bins
        end = ((i + 1) * length + bins - 1) // bins
        pieces.append(paddle.slice(x, axes=[axis], starts=[start], ends=[end]).max(axis=axis, keepdim=True))
    return paddle.concat(pieces, axis=axis)


def adaptive_max_pool2d(x: paddle.Tensor, output_size: int) -> paddle.Tensor:
    """``F.adaptive_max_pool2d`` (square output) from slices and reductions, exact for any input size.

    Paddle2ONNX refuses a dynamic input size for Paddle's adaptive max pooling and, at a fixed size
    its output does not divide, converts it into a plain max pooling with other windows (silently
    wrong). The maximum over a window is the maximum over its columns of the maxima over its rows,
    so two passes of ``output_size`` slices give the same values in dygraph, in a static program and
    in ONNX, with the bin boundaries computed from the (possibly dynamic) size.
    """
    return _bin_max(_bin_max(x, output_size, axis=2), output_size, axis=3)


class AdaptiveMaxPool2D(nn.Layer):
    """``paddle.nn.AdaptiveMaxPool2D`` in dygraph, ``adaptive_max_pool2d`` in a traced program.

    The values are the same; dygraph keeps Paddle's kernel so that training also keeps its
    gradient at ties (to one position of a bin, where a reduction's gradient goes to all of them).

    Args:
        output_size: side of the square output.
    """

    def __init__(self, output_size: int):
        super().__init__()
        self.output_size = int(output_size)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        if paddle.in_dynamic_mode():
            return nn.functional.adaptive_max_pool2d(x, self.output_size)
        return adaptive_max_pool2d(x, self.output_size)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


# ----------------------------------------------------------------------------------------------
# Softmax, GELU and LayerNorm by oneDNN in dygraph on the CPU (``segkit.ops``). Paddle 3.3 runs its
# CPU kernels of these on one thread, and its LayerNorm backward slowly even there: forward +
# backward on SegFormer-B0's shapes (2 threads, benchmarks/bench_layers.py) LayerNorm 4-8x, GELU
# 2.5-3.5x, softmax 1.2-2x faster. Values agree to float rounding (1e-7 relative). Elsewhere
# (traced programs, GPU, other dtypes, mixed precision, ``paddle_kernels()``) Paddle's kernels run.
# ----------------------------------------------------------------------------------------------


def onednn_applies(x: paddle.Tensor) -> bool:
    """Whether ``segkit.ops`` computes on ``x`` (dygraph, float32 on the CPU, no mixed precision, built)."""
    return _segkit_kernels_apply(x) and ops.available()


def softmax(x: paddle.Tensor) -> paddle.Tensor:
    """``F.softmax(x, axis=-1)``."""
    return ops.softmax(x) if onednn_applies(x) else nn.functional.softmax(x, axis=-1)


def gelu(x: paddle.Tensor) -> paddle.Tensor:
    """``F.gelu(x)`` (the exact erf form)."""
    return ops.gelu(x) if onednn_applies(x) else nn.functional.gelu(x)


class GELU(nn.GELU):
    """``paddle.nn.GELU`` computed by ``gelu`` (the tanh approximation stays Paddle's)."""

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return super().forward(x) if self._approximate else gelu(x)


class LayerNorm(nn.LayerNorm):
    """``paddle.nn.LayerNorm`` over the last axis, by oneDNN where ``segkit.ops`` runs: the same parameters,
    names and values (checkpoints load unchanged). Without a weight or bias, or over several axes, Paddle's."""

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        if len(self._normalized_shape) == 1 and self.weight is not None and self.bias is not None \
                and onednn_applies(x):
            return ops.layer_norm(x, self.weight, self.bias, self._epsilon)
        return super().forward(x)


# Paddle (3.3, CPU) copies a strided view fast when it is a transpose with at most three dimensions of
# size > 1, and about 15x slower otherwise (four or more, or a size-1 dimension with an odd stride):
# ``swap_middle`` transposes by 3-D transposes, each copied at once.


def swap_middle(x: paddle.Tensor) -> paddle.Tensor:
    """(B, P, Q, D) -> (B, Q, P, D), contiguous, by 3-D transposes (a reshape where P or Q is 1)."""
    b, p, q, d = x.shape
    if all(isinstance(n, int) for n in (p, q)) and 1 in (p, q):
        return x.reshape([0, q, p, d])  # 0: B as it is (also where it is unknown, in a traced program)
    if isinstance(b, int) and b == 1:
        return x.reshape([p, q, d]).transpose([1, 0, 2]).contiguous().reshape([1, q, p, d])
    x = x.reshape([b, p, q * d]).transpose([0, 2, 1]).contiguous()  # (B, Q * D, P)
    x = x.reshape([b * q, d, p]).transpose([0, 2, 1]).contiguous()
    return x.reshape([b, q, p, d])


def attention(q: paddle.Tensor, k: paddle.Tensor, v: paddle.Tensor, dropout_p: float = 0.0,
              training: bool = True) -> paddle.Tensor:
    """``F.scaled_dot_product_attention(q, k, v, dropout_p=..., training=...)`` on [B, N, heads, dim]
    tensors: on the CPU Paddle computes it from a matrix product, softmax and matrix product, as here,
    where the softmax is ``softmax``."""
    if not onednn_applies(q):
        return nn.functional.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, training=training)
    q, k, v = (swap_middle(t) for t in (q, k, v))  # heads first, copied by 3-D transposes
    weights = softmax(paddle.matmul(q * q.shape[-1] ** -0.5, k, transpose_y=True))
    if dropout_p > 0.0:
        weights = nn.functional.dropout(weights, dropout_p, training=training)
    return swap_middle(paddle.matmul(weights, v))
