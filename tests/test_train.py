"""The training loop: checkpoints, evaluation, exact resume, early failures."""

import os

import numpy as np
import paddle
import pytest
from conftest import QUICKSTART, Interrupted, interrupt_at, tiny_opts
from helpers import train_log

from segkit.config import load_config
from segkit.engine.checkpoints import atomic_save_dir
from segkit.engine import checkpoints
from segkit.engine.train import Trainer, TrainOptions
from segkit.errors import ConfigError, TrainingError


def logged_losses(save_dir):
    """(iteration, loss) of every record in the run's train_log.jsonl."""
    return [(r["iter"], r["loss"]) for r in train_log(save_dir)]


def make_trainer(scenes_root, save_dir, iters=4, extra=(), **options):
    cfg = load_config(QUICKSTART, tiny_opts(scenes_root, iters=iters) + list(extra))
    return Trainer(cfg, TrainOptions(save_dir=str(save_dir), log_iters=1, **options))


def test_training_writes_checkpoints_best_model_and_config(scenes_root, tmp_path):
    trainer = make_trainer(scenes_root, tmp_path, iters=4, extra=["val_dataset.transforms=[{type: Normalize}]"],
                           do_eval=True, save_interval=2, keep_checkpoint_max=1)
    state = trainer.train()
    assert state.iter == 4
    assert sorted(os.listdir(tmp_path)) == ["best_model", "config.yml", "eval_history.jsonl", "iter_4", "train.log",
                                            "train_log.jsonl"]  # iter_2 pruned
    for name in checkpoints.FILES:
        assert os.path.isfile(tmp_path / "iter_4" / name)
    assert os.path.isfile(tmp_path / "best_model" / "metrics.json")
    assert 0.0 <= state.best_miou <= 1.0 and state.best_iter in (2, 4)
    assert [it for it, _ in logged_losses(tmp_path)] == [1, 2, 3, 4]


def test_resume_continues_exactly(scenes_root, tmp_path):
    full = make_trainer(scenes_root, tmp_path / "full", iters=6, save_interval=2)
    full.train()

    broken = make_trainer(scenes_root, tmp_path / "broken", iters=6, save_interval=2)
    interrupt_at(broken, 5)
    with pytest.raises(Interrupted):
        broken.train()
    assert checkpoints.iteration_folders(str(tmp_path / "broken"))[-1].endswith("iter_4")

    resumed = make_trainer(scenes_root, tmp_path / "broken", iters=6, save_interval=2, resume_model="auto")
    assert resumed.state.iter == 4  # so this process runs iterations 5 and 6 only
    resumed.train()
    full_log, resumed_log = logged_losses(tmp_path / "full"), logged_losses(tmp_path / "broken")
    assert [it for it, _ in resumed_log] == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose([l for _, l in resumed_log[4:]], [l for _, l in full_log[4:]], rtol=1e-5)
    final_full = paddle.load(str(tmp_path / "full" / "iter_6" / "model.pdparams"))
    final_resumed = paddle.load(str(tmp_path / "broken" / "iter_6" / "model.pdparams"))
    for key, value in final_full.items():
        np.testing.assert_allclose(final_resumed[key].numpy(), value.numpy(), atol=1e-6, err_msg=key)


def test_loss_coef_mismatch_fails_before_training(scenes_root, tmp_path):
    with pytest.raises(ConfigError, match="loss.coef has 2 entries but SegFormer returns 1"):
        make_trainer(scenes_root, tmp_path, extra=["loss.coef=[1, 0.4]"])


def test_nan_loss_stops_with_iteration_lr_and_checkpoint(scenes_root, tmp_path):
    trainer = make_trainer(scenes_root, tmp_path, iters=3)
    trainer.loss = lambda logits, label: (logits[0].mean() * float("nan"), [])
    with pytest.raises(TrainingError, match=r"loss became nan at iteration 1 \(lr .*\)\. Last good checkpoint: none yet"):
        trainer.train()


def test_interrupted_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    target = tmp_path / "best_model"
    atomic_save_dir(str(target), {"a.pdparams": {"w": paddle.ones([2])}})
    calls = {"n": 0}
    real_save = paddle.save

    def failing_save(obj, path):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("killed while writing")
        real_save(obj, path)

    monkeypatch.setattr(paddle, "save", failing_save)
    with pytest.raises(KeyboardInterrupt):
        atomic_save_dir(str(target), {"a.pdparams": {"w": paddle.zeros([2])}, "b.pdopt": {}})
    monkeypatch.setattr(paddle, "save", real_save)
    assert os.listdir(target) == ["a.pdparams"]
    np.testing.assert_array_equal(paddle.load(str(target / "a.pdparams"))["w"].numpy(), [1, 1])


def test_bad_option_values_are_rejected():
    with pytest.raises(ConfigError, match="--save_interval"):
        TrainOptions(save_interval=0).check()
