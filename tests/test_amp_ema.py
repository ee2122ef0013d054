"""Training extras: gradient accumulation, gradient clipping, mixed precision on CPU, NaN handling, EMA.

The runs use TinySegNet (tests/dist_worker.py: no BatchNorm, no randomness) on 64x64 crops of a
small generated copy of the embedded scenes.
"""

import os

import numpy as np
import paddle
import pytest
from dist_worker import TinySegNet, write_tiny_config
from helpers import train_log

from segkit.config import load_config
from segkit.engine import checkpoints
from segkit.engine import train as train_module
from segkit.engine.ema import ModelEMA
from segkit.engine.train import Trainer, TrainOptions
from segkit.errors import TrainingError
from segkit.registry import MODELS

ADAMW = """  type: AdamW
  weight_decay: 0.01
  custom_cfg:
    - name: head
      lr_mult: 10.0"""
MOMENTUM = """  type: Momentum
  momentum: 0.9
  weight_decay: 0.0001"""


def sgd(clip_norm=None):
    clip = f"\n  grad_clip_cfg:\n    name: ClipGradByGlobalNorm\n    clip_norm: {clip_norm}" if clip_norm else ""
    return "  type: SGD" + clip


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    from segkit.datasets.embedded import generate

    path = str(tmp_path_factory.mktemp("scenes_small"))
    generate(path, splits={"train": (8, 0), "val": (3, 100_000)})
    return path


@pytest.fixture(autouse=True)
def tiny_model_registered(monkeypatch):
    monkeypatch.setitem(MODELS._items, "TinySegNet", TinySegNet)


def make(root, save_dir, optimizer=ADAMW, iters=3, batch_size=2, **options):
    os.makedirs(save_dir, exist_ok=True)
    config = write_tiny_config(str(save_dir) + ".yml", root, optimizer,
                               iters=iters, batch_size=batch_size)
    options.setdefault("save_interval", 1000)
    return Trainer(load_config(config), TrainOptions(save_dir=str(save_dir), log_iters=1, **options))


def weights(model_or_path):
    state = paddle.load(model_or_path) if isinstance(model_or_path, str) else model_or_path.state_dict()
    return {k: np.array(v.numpy(), dtype="float64") for k, v in state.items()}


def nan_at(trainer, iterations):
    """Make the loss NaN at the given iterations (one loss call per iteration here)."""
    real, calls = trainer.loss, {"n": 0}

    def loss(logits, label):
        calls["n"] += 1
        total, parts = real(logits, label)
        return (total * float("nan"), parts) if calls["n"] in iterations else (total, parts)

    trainer.loss = loss


def test_accumulation_matches_the_larger_batch(root, tmp_path):
    accumulated = make(root, str(tmp_path / "acc"), MOMENTUM, batch_size=2, accumulate_steps=2)
    accumulated.train()
    large = make(root, str(tmp_path / "large"), MOMENTUM, batch_size=4)
    large.train()
    a, b = weights(accumulated.model), weights(large.model)
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=0, atol=1e-6, err_msg=key)
    np.testing.assert_allclose([r["loss"] for r in train_log(tmp_path / "acc")],
                               [r["loss"] for r in train_log(tmp_path / "large")], rtol=1e-6)


def test_global_norm_clipping_bounds_the_update(root, tmp_path):
    norms = {}
    for name, clip in (("clipped", 1e-3), ("free", None)):
        trainer = make(root, str(tmp_path / name), sgd(clip), iters=1)
        before = weights(trainer.model)
        trainer.train()
        after = weights(trainer.model)
        norms[name] = np.sqrt(sum(((after[k] - before[k]) ** 2).sum() for k in before))
    lr = 0.01  # the config's learning rate at the first iteration
    assert norms["clipped"] == pytest.approx(lr * 1e-3, rel=1e-3)
    assert norms["free"] > 10 * lr * 1e-3  # so the clip did act


def test_fp16_non_finite_step_is_skipped_and_counted(root, tmp_path, capsys):
    trainer = make(root, str(tmp_path / "run"), precision="fp16", save_interval=1)
    nan_at(trainer, {2})
    state = trainer.train()
    assert "--precision fp16" in capsys.readouterr().out  # CPU: float32 numerics, said once
    assert state.iter == 3 and state.skipped_steps == 1
    w1, w2, w3 = (weights(str(tmp_path / "run" / f"iter_{i}" / "model.pdparams")) for i in (1, 2, 3))
    for key in w1:
        np.testing.assert_array_equal(w2[key], w1[key], err_msg=key)  # the NaN step changed nothing
    assert any(np.abs(w3[k] - w2[k]).max() > 0 for k in w3)  # and training went on
    log = train_log(tmp_path / "run")
    assert [r["skipped_steps"] for r in log] == [0, 1, 1] and np.isnan(log[1]["loss"])


def test_fp32_non_finite_loss_stops_naming_iteration_lr_and_last_checkpoint(root, tmp_path):
    trainer = make(root, str(tmp_path / "run"), iters=4, save_interval=2)
    nan_at(trainer, {3})
    last = str(tmp_path / "run" / "iter_2")
    with pytest.raises(TrainingError, match=rf"loss became nan at iteration 3 \(lr 0\.005\)\. Last good checkpoint: {last}\."):
        trainer.train()
    assert checkpoints.iteration_folders(str(tmp_path / "run")) == [last]


def test_ema_checkpoints_and_evaluation_use_the_average(root, tmp_path, monkeypatch):
    seen = []
    real_evaluate = train_module.evaluate

    def spy(model, *args, **kwargs):
        seen.append(weights(model))
        return real_evaluate(model, *args, **kwargs)

    monkeypatch.setattr(train_module, "evaluate", spy)
    trainer = make(root, str(tmp_path / "run"), iters=2, save_interval=1, do_eval=True, use_ema=True, ema_decay=0.5)
    initial = weights(trainer.model)
    trainer.train()
    run = tmp_path / "run"
    w1, w2 = weights(str(run / "iter_1" / "model.pdparams")), weights(str(run / "iter_2" / "model.pdparams"))
    e1, e2 = weights(str(run / "iter_1" / "ema.pdparams")), weights(str(run / "iter_2" / "ema.pdparams"))
    for key in initial:
        np.testing.assert_allclose(e1[key], 0.5 * initial[key] + 0.5 * w1[key], atol=1e-7, err_msg=key)
        np.testing.assert_allclose(e2[key], 0.5 * e1[key] + 0.5 * w2[key], atol=1e-7, err_msg=key)
        np.testing.assert_array_equal(seen[1][key], e2[key])  # evaluated with the EMA weights
    final = weights(trainer.model)
    for key in final:
        np.testing.assert_array_equal(final[key], w2[key])  # and the trained weights were put back


def cast_state_to_float32(state):
    """What paddle.amp.decorate(..., save_dtype="float32") hooks onto an O2 model's state_dict (on GPUs)."""
    for key in state:
        state[key] = state[key].astype("float32")


def test_ema_keeps_a_float32_average_of_a_half_precision_model():
    model = paddle.nn.Linear(3, 2)
    ema = ModelEMA(model, decay=0.5)
    model.to(dtype="float16")
    model.register_state_dict_hook(cast_state_to_float32)
    with paddle.no_grad():
        model.weight.set_value(paddle.ones([3, 2], dtype="float16"))
    ema.update(model)
    assert ema.shadow["weight"].dtype == paddle.float32
    with ema.applied(model):
        assert model.weight.dtype == paddle.float16
        np.testing.assert_allclose(model.weight.numpy(), ema.shadow["weight"].numpy().astype("float16"))
    np.testing.assert_array_equal(model.weight.numpy(), np.ones([3, 2], "float16"))


def test_bf16_on_cpu_falls_back_to_float32_with_a_message(root, tmp_path, capsys):
    bf16 = make(root, str(tmp_path / "bf16"), iters=2, precision="bf16", amp_level="O2")
    assert "--precision bf16: Paddle's mixed precision acts on GPU, XPU and custom devices only" in capsys.readouterr().out
    bf16.train()
    fp32 = make(root, str(tmp_path / "fp32"), iters=2)
    fp32.train()
    a, b = weights(bf16.model), weights(fp32.model)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
