"""Cross-entropy over labelled pixels, loss/output checks, parameter groups and the poly schedule."""

import numpy as np
import paddle
import pytest

from segkit.errors import ConfigError
from segkit.losses import CrossEntropyLoss, MultiLoss, OhemCrossEntropyLoss
from segkit.optim import AdamW, Momentum, build_lr_scheduler
from helpers import KERNELS, kernels


def manual_ce(logits, label, ignore, weight=None):
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    total, norm = 0.0, 0.0
    n, c, h, w = logits.shape
    for b in range(n):
        for i in range(h):
            for j in range(w):
                t = label[b, i, j]
                if t == ignore:
                    continue
                wt = 1.0 if weight is None else weight[t]
                total -= wt * logp[b, t, i, j]
                norm += wt
    return total / norm


@pytest.mark.parametrize("weight", [None, [1.0, 2.0, 0.5]])
def test_cross_entropy_mean_over_labelled_pixels(weight):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)
    label = rng.integers(0, 3, (2, 4, 5))
    label[0, 0, :] = 255
    loss = CrossEntropyLoss(weight=weight)(paddle.to_tensor(logits), paddle.to_tensor(label))
    assert float(loss) == pytest.approx(manual_ce(logits, label, 255, weight), rel=1e-5)


def manual_ce_grad(logits, label, ignore, weight):
    """d(mean loss)/d logits: (softmax - one_hot(label)) * w(label) / sum of w over labelled pixels."""
    prob = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    valid = label != ignore
    safe = np.where(valid, label, 0)
    pixel_weight = np.asarray(weight, np.float64)[safe] * valid
    one_hot = np.eye(logits.shape[1])[safe].transpose(0, 3, 1, 2)
    return (prob - one_hot) * pixel_weight[:, None] / pixel_weight.sum()


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("weight", [None, [1.0, 2.0, 0.5, 1.5]])
def test_cross_entropy_value_and_gradient(kernel, weight):
    """On Paddle's kernel and segkit's oneDNN one (logits [N, C, H, W], classes on axis 1), against numpy."""
    rng = np.random.default_rng(1)
    logits = (rng.normal(size=(2, 4, 6, 7)) * 3).astype(np.float32)
    label = rng.integers(0, 4, (2, 6, 7))
    label[1, 2:4, :] = 255
    x = paddle.to_tensor(logits, stop_gradient=False)
    with kernels(kernel):
        loss = CrossEntropyLoss(weight=weight)(x, paddle.to_tensor(label))
        loss.backward()
    assert float(loss) == pytest.approx(manual_ce(logits.astype(np.float64), label, 255, weight), rel=1e-5)
    expected = manual_ce_grad(logits.astype(np.float64), label, 255, [1.0] * 4 if weight is None else weight)
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-4, atol=1e-6)


def test_cross_entropy_rejects_a_label_that_is_no_class():
    """segkit's oneDNN cross-entropy names the bad label (the datasets check labels before, this is the last guard)."""
    label = paddle.to_tensor(np.array([[[0, 1], [7, 255]]]))
    with pytest.raises(Exception, match="label 7 is neither a class in \\[0, 3\\) nor ignore_index 255"):
        CrossEntropyLoss()(paddle.randn([1, 3, 2, 2]), label)


def test_all_ignored_gives_zero_loss():
    logits = paddle.randn([1, 3, 2, 2])
    label = paddle.full([1, 2, 2], 255, dtype="int64")
    assert float(CrossEntropyLoss()(logits, label)) == 0.0


def test_ohem_keeps_at_least_min_kept_hardest_pixels():
    logits = np.zeros((1, 2, 1, 4), np.float32)
    logits[0, 0, 0] = [5, 4, -3, -4]  # class 0 favoured at the first two pixels
    label = np.zeros((1, 1, 4), np.int64)  # all class 0: the last two are hard
    loss = OhemCrossEntropyLoss(thresh=0.01, min_kept=2)(paddle.to_tensor(logits), paddle.to_tensor(label))
    hard = manual_ce(logits[..., 2:], label[..., 2:], 255)
    assert float(loss) == pytest.approx(hard, rel=1e-5)


def test_multiloss_checks_coef_against_outputs():
    loss = MultiLoss([CrossEntropyLoss()], [1.0])
    loss.check_outputs(1, "M")
    with pytest.raises(ConfigError, match="returns 2 logits"):
        loss.check_outputs(2, "RTFormer")


def test_custom_cfg_groups_lr_and_decay():
    model = paddle.nn.Sequential(paddle.nn.Linear(2, 2), paddle.nn.LayerNorm(2), paddle.nn.Linear(2, 2))
    factory = AdamW(weight_decay=0.01, custom_cfg=[{"name": "1.", "weight_decay_mult": 0.0}, {"name": "2.", "lr_mult": 10.0}])
    groups = factory.param_groups(model)
    assert [len(g["params"]) for g in groups] == [2, 2, 2]
    assert [g["learning_rate"] for g in groups] == [1.0, 10.0, 1.0]
    assert [g["weight_decay"] for g in groups] == [0.0, 0.01, 0.01]


def test_lr_multiplier_takes_effect_in_a_step():
    paddle.seed(0)
    model = paddle.nn.Sequential(paddle.nn.Linear(1, 1, bias_attr=False), paddle.nn.Linear(1, 1, bias_attr=False))
    before = [p.numpy().copy() for p in model.parameters()]
    opt = Momentum(momentum=0.0, custom_cfg=[{"name": "1.", "lr_mult": 10.0}])(model, 0.1)
    model(paddle.ones([1, 1])).sum().backward()
    grads = [p.grad.numpy().copy() for p in model.parameters()]
    opt.step()
    after = [p.numpy() for p in model.parameters()]
    np.testing.assert_allclose(before[0] - after[0], 0.1 * grads[0], rtol=1e-5)
    np.testing.assert_allclose(before[1] - after[1], 1.0 * grads[1], rtol=1e-5)


def test_poly_with_warmup_values():
    section = {"type": "PolynomialDecay", "learning_rate": 0.1, "end_lr": 0.0, "power": 1.0, "warmup_iters": 2, "warmup_start_lr": 0.0}
    sched = build_lr_scheduler(section, iters=12)
    values = []
    for _ in range(12):
        values.append(sched.get_lr())
        sched.step()
    np.testing.assert_allclose(values[:3], [0.0, 0.05, 0.1], atol=1e-9)
    # after warmup: linear decay over iters - warmup = 10 steps
    np.testing.assert_allclose(values[2:], [0.1 * (1 - k / 10) for k in range(10)], atol=1e-9)


def test_adamw_weight_decay_multiplier_takes_effect():
    model = paddle.nn.Sequential(paddle.nn.Linear(1, 1, bias_attr=False), paddle.nn.Linear(1, 1, bias_attr=False))
    for p in model.parameters():
        p.set_value(paddle.ones_like(p))
    opt = AdamW(weight_decay=0.5, custom_cfg=[{"name": "0.", "weight_decay_mult": 0.0}])(model, 0.1)
    (model(paddle.ones([1, 1])) * 0.0).sum().backward()  # zero gradients: only the decay moves weights
    opt.step()
    weights = [float(p.numpy().ravel()[0]) for p in model.parameters()]
    assert weights[0] == pytest.approx(1.0)
    assert weights[1] == pytest.approx(1.0 - 0.1 * 0.5)
