"""Data-parallel training with two CPU processes under paddle.distributed.launch (gloo backend).

Two ranks with batch 2 each must end where one process with batch 4 ends: same samples, same
augmentation, gradients averaged over ranks. AdamW with custom_cfg parameter groups (head lr x10,
no decay on biases) and global-norm clipping is used, and EMA weights are kept and evaluated, so
these are checked across ranks too. The validation set has an odd number of images (5).
Both runs use ``--precision fp16`` (float32 numerics on CPU, with the skip of non-finite steps) and
the loss turns NaN at iteration 2 on one rank only: every rank must skip that step.
"""

import json
import os
import subprocess
import sys

import numpy as np
import paddle
import pytest
from dist_worker import HERE, ROOT, write_tiny_config

from segkit.engine.sampler import TrainSampler
from segkit.engine.train import convert_sync_bn
from segkit.errors import ConfigError

OPTIMIZER = """  type: AdamW
  weight_decay: 0.01
  custom_cfg:
    - name: head
      lr_mult: 10.0
    - name: bias
      weight_decay_mult: 0.0
  grad_clip_cfg:
    name: ClipGradByGlobalNorm
    clip_norm: 0.5"""
ITERS = 4


def train_command(config, save_dir, batch_size):
    return [os.path.join(HERE, "dist_worker.py"), "--config", config, "--save_dir", save_dir, "--batch_size", str(batch_size),
            "--save_interval", "2", "--log_iters", "1", "--do_eval", "--use_ema", "--ema_decay", "0.5", "--precision", "fp16"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Start the two-process run and the single-process run side by side; wait for both."""
    from segkit.datasets.embedded import generate

    tmp = tmp_path_factory.mktemp("dist")
    root = str(tmp / "scenes")
    generate(root, splits={"train": (8, 0), "val": (5, 100_000)})
    config = write_tiny_config(str(tmp / "tiny.yml"), root, OPTIMIZER, iters=ITERS)
    two = str(tmp / "two")
    one = str(tmp / "one")
    launcher = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2", "--log_dir", str(tmp / "log")]
    commands = {"two": launcher + train_command(config, two, 2), "one": [sys.executable] + train_command(config, one, 4)}
    nan_at = {"two": "1:2", "one": "0:2"}  # rank:iteration
    procs = {
        name: subprocess.Popen(command, env=dict(os.environ, PYTHONPATH=ROOT, SEGKIT_TEST_NAN_AT=nan_at[name]), cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for name, command in commands.items()
    }
    outputs = {name: proc.communicate(timeout=240)[0] for name, proc in procs.items()}
    logs = {}
    for rank in (0, 1):
        path = tmp / "log" / f"workerlog.{rank}"
        logs[rank] = path.read_text() if path.exists() else ""
    for name, proc in procs.items():
        assert proc.returncode == 0, f"{name} failed:\n{outputs[name][-3000:]}\n{logs[0][-3000:]}\n{logs[1][-3000:]}"
    return {"two": two, "one": one, "logs": logs}


def load(path):
    return {k: np.asarray(v) for k, v in paddle.load(path).items()}


def read_log(save_dir):
    with open(os.path.join(save_dir, "train_log.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_ranks_hold_identical_parameters(runs):
    rank0 = load(os.path.join(runs["two"], "rank0.pdparams"))
    rank1 = load(os.path.join(runs["two"], "rank1.pdparams"))
    assert rank0.keys() == rank1.keys()
    for key in rank0:
        np.testing.assert_array_equal(rank0[key], rank1[key], err_msg=key)


def test_two_processes_match_one_process_with_the_global_batch(runs):
    for name in ("model.pdparams", "ema.pdparams"):
        two = load(os.path.join(runs["two"], f"iter_{ITERS}", name))
        one = load(os.path.join(runs["one"], f"iter_{ITERS}", name))
        assert two.keys() == one.keys()
        for key in one:
            np.testing.assert_allclose(two[key], one[key], rtol=0, atol=1e-5, err_msg=f"{name} {key}")
    initial = load(os.path.join(runs["two"], "iter_2", "model.pdparams"))
    final = load(os.path.join(runs["two"], f"iter_{ITERS}", "model.pdparams"))
    assert all(np.abs(final[k] - initial[k]).max() > 1e-4 for k in final)  # every tensor was trained
    # The logged loss is the mean over ranks: the loss of the global batch.
    two_log, one_log = read_log(runs["two"]), read_log(runs["one"])
    assert [r["iter"] for r in two_log] == list(range(1, ITERS + 1))
    np.testing.assert_allclose([r["loss"] for r in two_log], [r["loss"] for r in one_log], rtol=1e-5)  # NaN == NaN here
    np.testing.assert_allclose([r["lr"] for r in two_log], [r["lr"] for r in one_log], rtol=1e-12)


def test_a_nan_on_one_rank_makes_every_rank_skip_the_step(runs):
    for name in ("two", "one"):
        log = read_log(runs[name])
        assert [r["skipped_steps"] for r in log] == [0, 1, 1, 1], name
        assert np.isnan(log[1]["loss"]) and np.isfinite(log[2]["loss"])
    # The ranks stayed identical (test_ranks_hold_identical_parameters) and match the single
    # process, which skipped the same step.


def test_distributed_evaluation_counts_every_image_once(runs):
    two = json.load(open(os.path.join(runs["two"], "best_model", "metrics.json")))
    one = json.load(open(os.path.join(runs["one"], "best_model", "metrics.json")))
    assert two["num_images"] == one["num_images"] == 5
    assert sum(c["pixels"] for c in two["per_class"]) == 5 * 160 * 160
    assert two["mIoU"] == pytest.approx(one["mIoU"], abs=1e-3)
    images = [r["image"] for r in json.load(open(os.path.join(runs["two"], "best_model", "per_image.json")))]
    assert len(images) == len(set(images)) == 5  # both ranks' images, each once


def test_only_rank_zero_logs_and_saves(runs):
    assert "[TRAIN]" in runs["logs"][0] and "[EVAL]" in runs["logs"][0]
    assert "[TRAIN]" not in runs["logs"][1] and "[EVAL]" not in runs["logs"][1]
    assert sorted(os.listdir(runs["two"])) == ["best_model", "config.yml", "eval_history.jsonl", "iter_2", "iter_4",
                                               "rank0.pdparams", "rank1.pdparams", "train.log", "train_log.jsonl"]
    with open(os.path.join(runs["two"], "train.log")) as f:
        console = f.read().splitlines()  # rank 0's console; rank 1's lines stay in its launcher log
    assert any("[TRAIN]" in line for line in console) and all(line in runs["logs"][0] for line in console)


def test_sync_bn_conversion():
    model = paddle.nn.Sequential(paddle.nn.Conv2D(3, 4, 1), paddle.nn.BatchNorm2D(4))
    assert convert_sync_bn(model, 1, "cpu") is model
    converted = convert_sync_bn(model, 2, "gpu:0")
    assert isinstance(converted[1], paddle.nn.SyncBatchNorm)
    with pytest.raises(ConfigError, match="SyncBatchNorm runs on GPUs only"):
        convert_sync_bn(model, 2, "cpu")


def test_ranks_split_each_global_batch_and_reshuffle_every_epoch():
    single = TrainSampler(10, 4, seed=3)
    ranks = [TrainSampler(10, 2, seed=3, rank=r, world_size=2) for r in (0, 1)]
    assert len(single) == 2  # 10 samples, global batch 4, last partial batch dropped
    for iteration in range(6):
        assert ranks[0].batch(iteration) + ranks[1].batch(iteration) == single.batch(iteration)
    epochs = [[i for it in range(e * 2, e * 2 + 2) for _, i in single.batch(it)] for e in range(3)]
    assert all(len(set(order)) == 8 for order in epochs)  # no sample twice in an epoch
    assert epochs[0] != epochs[1] != epochs[2]  # a new order every epoch
