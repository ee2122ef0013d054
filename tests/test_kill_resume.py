"""Lossless resume after SIGKILL: tools/train.py is killed while it writes a checkpoint and again at a
random moment, resumed each time with ``--resume_model auto``, and must end exactly where an
uninterrupted run ends: same loss log, same weights, optimizer moments, EMA and schedule.

Runs the quickstart config (SegFormer-B0 with drop-path, AdamW, warmup + polynomial decay) on
64x64 crops, 8 iterations of batch 2, a checkpoint every 2 iterations.
"""

import json
import os
import random
import re
import signal
import subprocess
import sys
import time

import numpy as np
import paddle
from conftest import QUICKSTART, ROOT, tiny_opts

from segkit.engine import checkpoints
from segkit.engine.train_logger import truncate_loss_log

ITERS = 8


def start(scenes_root, save_dir, resume=False):
    command = [sys.executable, os.path.join(ROOT, "tools", "train.py"), "--config", QUICKSTART, "--save_dir", save_dir,
               "--save_interval", "2", "--log_iters", "1", "--use_ema", "--keep_checkpoint_max", "3"]
    if resume:
        command += ["--resume_model", "auto"]
    command += ["--opts"] + tiny_opts(scenes_root, iters=ITERS)
    output = save_dir + f".{time.monotonic_ns()}.out"
    with open(output, "w") as log:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    proc.output = output
    return proc


def printed(proc, text):
    with open(proc.output) as f:
        return text in f.read()


def wait_for(proc, condition, timeout=120.0):
    """Poll ``condition()`` every millisecond until it holds (True) or the process ends (False)."""
    end = time.time() + timeout
    while time.time() < end:
        if condition():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.001)
    raise TimeoutError("training did not get there in time")


def kill(proc):
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def temporaries(save_dir):
    return [n for n in os.listdir(save_dir) if n.startswith(".iter_") and ".tmp" in n] if os.path.isdir(save_dir) else []


def logged_iterations(save_dir):
    path = os.path.join(save_dir, "train_log.jsonl")
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return [json.loads(line)["iter"] for line in f if line.endswith("\n")]


def read_log(save_dir):
    with open(os.path.join(save_dir, "train_log.jsonl")) as f:
        return [json.loads(line) for line in f]


def tensors(obj, prefix=""):
    """Flatten a loaded checkpoint object into {dotted key: numpy array or plain value}."""
    if isinstance(obj, dict):
        flat = {}
        for key, value in obj.items():
            flat.update(tensors(value, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: obj.numpy() if isinstance(obj, paddle.Tensor) else np.asarray(obj)}


def test_sigkill_during_save_and_at_random_then_resume_auto_matches_uninterrupted(scenes_root, tmp_path):
    seed = random.randrange(10**6)
    rng = random.Random(seed)
    reference_dir, victim_dir = str(tmp_path / "reference"), str(tmp_path / "victim")
    reference = start(scenes_root, reference_dir)

    # 1. Kill while the checkpoint of iteration 4 or 6 is being written.
    target = rng.choice([4, 6])
    victim = start(scenes_root, victim_dir)
    writing = wait_for(victim, lambda: any(n.startswith(f".iter_{target}.tmp") for n in temporaries(victim_dir)))
    kill(victim)
    assert writing, f"the run ended before the save of iter_{target} (seed {seed})"
    assert temporaries(victim_dir), f"killed after the save of iter_{target} finished (seed {seed})"
    newest = checkpoints.iteration_folders(victim_dir)[-1]
    assert newest.endswith(f"iter_{target - 2}"), (newest, seed)
    assert max(logged_iterations(victim_dir)) == target

    # 2. Resume, then kill at a random moment a little later.
    victim = start(scenes_root, victim_dir, resume=True)
    stop_at = rng.randint(target - 1, ITERS - 1)
    reached = wait_for(victim, lambda: printed(victim, f"iter: {stop_at}/{ITERS},"))
    time.sleep(rng.uniform(0.0, 0.4))
    kill(victim)
    assert reached, f"the resumed run failed (seed {seed})"
    assert printed(victim, f"Resumed from {newest} at iteration {target - 2}.")

    # 3. Resume again and finish.
    victim = start(scenes_root, victim_dir, resume=True)
    assert victim.wait(timeout=120) == 0, f"the final resume failed (seed {seed})"
    assert reference.wait(timeout=120) == 0
    assert temporaries(victim_dir) == []  # the interrupted saves were cleaned up

    ours, theirs = read_log(victim_dir), read_log(reference_dir)
    assert [r["iter"] for r in ours] == list(range(1, ITERS + 1)), seed
    np.testing.assert_allclose([r["loss"] for r in ours], [r["loss"] for r in theirs], rtol=1e-5, err_msg=str(seed))
    assert [r["lr"] for r in ours] == [r["lr"] for r in theirs]
    # train.log, cut back at each resume, has every iteration's line once (and the resumes' own lines)
    with open(os.path.join(victim_dir, "train.log")) as f:
        console = f.read()
    assert re.findall(r"\[TRAIN\] epoch: \d+, iter: (\d+)/", console) == [str(i) for i in range(1, ITERS + 1)], seed
    # The second resume cuts the first one's line too when both start from the same checkpoint.
    assert console.count("Resumed from") in (1, 2), seed
    for name in checkpoints.FILES + ("ema.pdparams",):
        mine = tensors(paddle.load(os.path.join(victim_dir, f"iter_{ITERS}", name)))
        reference_state = tensors(paddle.load(os.path.join(reference_dir, f"iter_{ITERS}", name)))
        # train.log differs by the resumes' lines, so its size at the checkpoint does too
        mine.pop("train_log_bytes", None), reference_state.pop("train_log_bytes", None)
        assert mine.keys() == reference_state.keys(), name
        for key, value in reference_state.items():
            if value.dtype.kind in "fc":
                np.testing.assert_allclose(mine[key], value, rtol=1e-5, atol=1e-6, err_msg=f"{name} {key} (seed {seed})")
            else:
                assert np.array_equal(mine[key], value), (name, key, seed)


def test_interrupted_saves_are_tidied(tmp_path):
    for name in (".iter_4.tmpab12", ".best_model.oldcd34", "iter_2", ".iter_2.oldef56", ".keep"):
        os.makedirs(tmp_path / name)
    (tmp_path / ".best_model.oldcd34" / "model.pdparams").write_text("previous best")
    done = checkpoints.clean_interrupted(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == [".keep", "best_model", "iter_2"]
    assert (tmp_path / "best_model" / "model.pdparams").read_text() == "previous best"
    assert len(done) == 3


def test_loss_log_is_cut_back_to_the_resumed_iteration(tmp_path):
    path = tmp_path / "train_log.jsonl"
    path.write_text("".join(json.dumps({"iter": i, "loss": 1.0 / i}) + "\n" for i in range(1, 6)) + '{"iter": 6, "lo')
    truncate_loss_log(str(path), 3)
    assert [json.loads(line)["iter"] for line in path.read_text().splitlines()] == [1, 2, 3]
    truncate_loss_log(str(path), 0)  # a fresh start
    assert path.read_text() == ""
