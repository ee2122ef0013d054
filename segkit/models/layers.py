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
