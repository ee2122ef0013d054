"""segkit's shared layers against the Paddle operations they stand in for."""

import numpy as np
import paddle
import pytest
from paddle import nn

from segkit.models.layers import Conv2D, add_channel_bias, scale_channels


def _run(layer: nn.Layer, x: paddle.Tensor):
    """Output and input/parameter gradients of ``(layer(x) * weights).sum()``."""
    x = x.detach()
    x.stop_gradient = False
    out = layer(x)
    paddle.seed(1)
    (out * paddle.randn(out.shape)).sum().backward()
    grads = [x.grad.numpy()] + [p.grad.numpy() for p in layer.parameters()]
    return out.numpy(), grads


@pytest.mark.parametrize("kwargs", [
    dict(kernel_size=3, padding=1),
    dict(kernel_size=3, stride=2, padding=1, bias_attr=False),
    dict(kernel_size=(1, 7), padding=(0, 3), groups=8),
    dict(kernel_size=1),
    dict(kernel_size=3, padding="same", dilation=2, groups=2),
])
def test_conv2d_matches_paddle_bit_for_bit(kwargs):
    """Same parameter names, and the same output and gradients to the bit, as paddle.nn.Conv2D."""
    paddle.seed(0)
    ours = Conv2D(8, 8, **kwargs)
    theirs = nn.Conv2D(8, 8, **kwargs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    theirs.set_state_dict(ours.state_dict())
    x = paddle.randn([2, 8, 11, 14])
    (out, grads), (ref, ref_grads) = _run(ours, x), _run(theirs, x)
    np.testing.assert_array_equal(out, ref)
    for got, want in zip(grads, ref_grads):
        np.testing.assert_array_equal(got, want)


def test_per_channel_ops_equal_broadcasting():
    x = paddle.randn([2, 5, 3, 4])
    values = paddle.randn([5, 1, 1])
    np.testing.assert_array_equal(add_channel_bias(x, values.flatten()).numpy(), (x + values).numpy())
    np.testing.assert_array_equal(scale_channels(x, values).numpy(), (x * values).numpy())
