"""Building blocks shared by several model families."""

import paddle
from paddle import nn


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
    """``x + bias[None, :, None, None]`` for an NCHW ``x``, by the fast layout of ``_per_channel``."""
    return _per_channel(x, bias, paddle.add)


def scale_channels(x: paddle.Tensor, scale: paddle.Tensor) -> paddle.Tensor:
    """``x * scale`` for an NCHW ``x`` and ``C`` scales of any shape, by the fast layout of ``_per_channel``."""
    return _per_channel(x, scale, paddle.multiply)


class Conv2D(nn.Conv2D):
    """``paddle.nn.Conv2D`` that adds its bias with ``add_channel_bias``: same parameters, names and
    values (checkpoints load unchanged), same output, a faster forward and backward on the CPU."""

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        if self.bias is None or self._data_format != "NCHW" or self._padding_mode != "zeros":
            return super().forward(x)
        out = nn.functional.conv2d(x, self.weight, None, stride=self._stride, padding=self._padding,
                                   dilation=self._dilation, groups=self._groups)
        return add_channel_bias(out, self.bias)


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
