"""Every registered model variant: forward and backward on odd sizes, every parameter gets a gradient."""

import inspect

import numpy as np
import paddle
import pytest

import segkit.models  # noqa: F401  (registers the models)
from segkit.registry import MODELS

VARIANTS = [name for name in MODELS.names() if inspect.isfunction(MODELS.get(name))]


def test_every_family_has_variants():
    families = {name.split("_")[0] for name in VARIANTS}
    assert {"segformer", "rtformer", "segnext", "hrvit"} <= families


@pytest.mark.parametrize("name", VARIANTS)
def test_forward_backward_odd_size(name):
    paddle.seed(0)
    model = MODELS.get(name)(num_classes=7)
    model.train()
    x = paddle.randn([2, 3, 67, 93])
    outputs = model(x)
    assert isinstance(outputs, list) and len(outputs) == model.num_outputs
    for out in outputs:
        assert out.shape == [2, 7, 67, 93]
    paddle.add_n([o.mean() for o in outputs]).backward()
    missing = [n for n, p in model.named_parameters() if not p.stop_gradient and p.grad is None]
    assert not missing, f"parameters without gradient: {missing[:5]}"
    assert all(np.isfinite(p.grad.numpy()).all() for p in model.parameters() if not p.stop_gradient)

    model.eval()
    with paddle.no_grad():
        out = model(paddle.randn([1, 3, 61, 45]))
    assert isinstance(out, paddle.Tensor) and out.shape == [1, 7, 61, 45]
