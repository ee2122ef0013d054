"""PaddleSeg recipe losses: values and gradients against paddleseg==2.8.0, and their config use."""

import numpy as np
import paddle
import pytest
from paddleseg.models import losses as ps

from segkit.config import Config
from segkit.errors import ConfigError
from segkit.losses import (BCELoss, BootstrappedCrossEntropyLoss, CrossEntropyLoss, DiceLoss, FocalLoss,
                           LovaszSoftmaxLoss, MixedLoss)


def inputs(classes: int, seed: int, ignore_fraction: float = 0.15, shape=(2, 7, 9)):
    """Logits [N, C, H, W] and labels [N, H, W] with some pixels at 255."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2, size=(shape[0], classes, *shape[1:])).astype("float32")
    label = rng.integers(0, max(classes, 2), size=shape).astype("int64")
    label[rng.random(shape) < ignore_fraction] = 255
    return logits, label


def value_and_grad(loss, logits, label):
    x = paddle.to_tensor(logits, stop_gradient=False)
    out = loss(x, paddle.to_tensor(label))
    total = paddle.add_n(out) if isinstance(out, list) else out
    total.backward()
    return float(total), x.grad.numpy()


def assert_parity(ours, theirs, logits, label, rtol=1e-5):
    value, grad = value_and_grad(ours, logits, label)
    expected_value, expected_grad = value_and_grad(theirs, logits, label.copy())
    assert value == pytest.approx(expected_value, rel=rtol, abs=1e-7)
    np.testing.assert_allclose(grad, expected_grad, rtol=rtol, atol=1e-7)


@pytest.mark.parametrize("kwargs", [{}, {"weight": [0.2, 1.0, 3.0], "smooth": 0.5}])
def test_dice_matches_paddleseg(kwargs):
    logits, label = inputs(3, seed=1)
    assert_parity(DiceLoss(**kwargs), ps.DiceLoss(**kwargs), logits, label)


@pytest.mark.parametrize("classes", ["present", "all", [0, 2]])
def test_lovasz_softmax_matches_paddleseg(classes):
    logits, label = inputs(4, seed=2)
    label[label == 3] = 1  # class 3 absent: 'present' and 'all' differ
    assert_parity(LovaszSoftmaxLoss(classes=classes), ps.LovaszSoftmaxLoss(classes=classes), logits, label)


@pytest.mark.parametrize("kwargs", [{}, {"alpha": 0.6, "gamma": 1.5}])
def test_focal_matches_paddleseg(kwargs):
    logits, label = inputs(2, seed=3)
    assert_parity(FocalLoss(**kwargs), ps.FocalLoss(**kwargs), logits, label)


@pytest.mark.parametrize("classes, kwargs, ignore", [
    (1, {}, 0.15),  # binary segmentation: one output channel, label 0/1
    (1, {"pos_weight": 2.5}, 0.15),
    (1, {"weight": "dynamic", "pos_weight": "dynamic"}, 0.0),  # PaddleSeg counts ignored pixels as negatives
    (3, {}, 0.15),  # one-hot targets per channel
])
def test_bce_matches_paddleseg(classes, kwargs, ignore):
    logits, label = inputs(classes, seed=4, ignore_fraction=ignore)
    assert_parity(BCELoss(**kwargs), ps.BCELoss(**kwargs), logits, label)


def test_bce_dynamic_weights_count_labelled_pixels_only():
    logits, label = inputs(1, seed=5, ignore_fraction=0.0)
    padded_logits = np.concatenate([logits, np.zeros_like(logits)], axis=3)
    padded_label = np.concatenate([label, np.full_like(label, 255)], axis=2)
    loss = BCELoss(weight="dynamic", pos_weight="dynamic")
    assert value_and_grad(loss, padded_logits, padded_label)[0] == pytest.approx(value_and_grad(loss, logits, label)[0], rel=1e-6)


@pytest.mark.parametrize("min_k, threshold", [(20, 0.3), (20, 50.0), (5, 1.0)])
def test_bootstrapped_cross_entropy_matches_paddleseg(min_k, threshold):
    logits, label = inputs(3, seed=6)
    for weight in (None, [1.0, 0.5, 2.0]):
        assert_parity(BootstrappedCrossEntropyLoss(min_k, threshold, weight=weight),
                      ps.BootstrappedCrossEntropyLoss(min_k, threshold, weight=weight), logits, label)


def test_mixed_loss_matches_paddleseg_and_keeps_the_label():
    logits, label = inputs(3, seed=7)
    bootstrapped = {"type": "BootstrappedCrossEntropyLoss", "min_K": 20, "loss_th": 0.3}
    ours = MixedLoss([bootstrapped, {"type": "DiceLoss"}, {"type": "LovaszSoftmaxLoss"}], [0.5, 0.3, 0.2])
    value, grad = value_and_grad(ours, logits, label)
    # PaddleSeg 2.8's DiceLoss overwrites ignored labels in place (so it goes last, and autograd
    # refuses a backward through the mixture): its MixedLoss gives the value, and the sum of its
    # separate losses the gradient. (Its CrossEntropyLoss fails under Paddle 3: int64 * float32.)
    theirs = ps.MixedLoss([ps.BootstrappedCrossEntropyLoss(20, 0.3), ps.LovaszSoftmaxLoss(), ps.DiceLoss()], [0.5, 0.2, 0.3])
    with paddle.no_grad():
        expected = float(paddle.add_n(theirs(paddle.to_tensor(logits), paddle.to_tensor(label.copy()))))
    assert value == pytest.approx(expected, rel=1e-5)
    parts = [(0.5, ps.BootstrappedCrossEntropyLoss(20, 0.3)), (0.3, ps.DiceLoss()), (0.2, ps.LovaszSoftmaxLoss())]
    expected_grad = sum(c * value_and_grad(loss, logits, label.copy())[1] for c, loss in parts)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-5, atol=1e-7)
    label_tensor = paddle.to_tensor(label)
    ours(paddle.to_tensor(logits), label_tensor)
    np.testing.assert_array_equal(label_tensor.numpy(), label)


def test_losses_build_from_a_paddleseg_style_loss_section():
    section = {"types": [{"type": "MixedLoss", "losses": [{"type": "CrossEntropyLoss"}, {"type": "LovaszSoftmaxLoss"}],
                          "coef": [0.8, 0.2]}], "coef": [1]}
    loss = Config({"loss": section}).build_loss()
    logits, label = inputs(3, seed=8)
    expected = 0.8 * value_and_grad(CrossEntropyLoss(), logits, label)[0] + 0.2 * value_and_grad(LovaszSoftmaxLoss(), logits, label)[0]
    total, _ = loss([paddle.to_tensor(logits)], paddle.to_tensor(label))
    assert float(total) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("section, message", [
    ({"type": "MixedLoss", "losses": [{"type": "DiceLos"}], "coef": [1]}, "DiceLoss"),
    ({"type": "MixedLoss", "losses": [{"type": "DiceLoss"}], "coef": [1, 2]}, "same length"),
    ({"type": "BCELoss", "weight": [1.0, 2.0]}, "BCELoss.weight"),
    ({"type": "LovaszSoftmaxLoss", "classes": "most"}, "present"),
])
def test_bad_loss_arguments_are_config_errors(section, message):
    with pytest.raises(ConfigError, match=message):
        Config({"loss": {"types": [section], "coef": [1]}}).build_loss()


def test_focal_loss_needs_two_channels():
    logits, label = inputs(3, seed=9)
    with pytest.raises(ConfigError, match="2 output channels"):
        FocalLoss()(paddle.to_tensor(logits), paddle.to_tensor(label))
