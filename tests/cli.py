"""Running the command-line tools as a user does, in subprocesses side by side, for the robustness tests."""

import os
import subprocess
import sys
import time

import pytest
from conftest import ROOT
from helpers import schedule_and_loss
from layouts import cityscapes

TIMEOUT = 300  # seconds for a whole batch of side-by-side runs (a few s each on a quiet machine); a hang fails the test instead of stalling CI

CONFIG = """batch_size: 2
iters: 2
model:
  type: SegFormer
  backbone:
    type: mit_b0
  embedding_dim: 32
train_dataset:
  type: Cityscapes
  dataset_root: {root}
  mode: train
  transforms:
    - type: RandomPaddingCrop
      crop_size: [32, 32]
    - type: Normalize
val_dataset:
  type: Cityscapes
  dataset_root: {root}
  mode: val
  transforms:
    - type: Normalize
optimizer:
  type: AdamW
  weight_decay: 0.01
""" + schedule_and_loss(0.0001)


def label_path(root, split, i):
    return os.path.join(root, "gtFine", split, "aachen", f"aachen_{i:06d}_000019_gtFine_labelTrainIds.png")


def image_path(root, split, i):
    return os.path.join(root, "leftImg8bit", split, "aachen", f"aachen_{i:06d}_000019_leftImg8bit.png")


def make_case(tmp, name, split, damage):
    """A Cityscapes layout (2 train, 2 val images) whose second ``split`` label is damaged; returns (config, bad file)."""
    root = cityscapes(str(tmp / name))
    bad = label_path(root, split, 1)
    if damage:
        damage(bad)
    config = tmp / f"{name}.yml"
    config.write_text(CONFIG.format(root=root))
    return str(config), bad


def tool(name, *args):
    return [sys.executable, os.path.join(ROOT, "tools", name), *map(str, args)]


def run_side_by_side(commands):
    """Run ``{name: argv}`` at once; returns ``{name: (exit status, output)}``; a hang fails the test."""
    procs = {name: subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for name, argv in commands.items()}
    results = {}
    try:
        for name, proc in procs.items():
            try:
                results[name] = (proc.wait(timeout=TIMEOUT), proc.stdout.read())
            except subprocess.TimeoutExpired:
                pytest.fail(f"{name}: still running after {TIMEOUT} s (a hang): {' '.join(commands[name])}")
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.stdout.close()
    return results


def assert_clean_stop(results, bad, status=2):
    for name, (code, err) in results.items():
        assert code == status, f"{name}: exit {code}\n{err[-3000:]}"
        assert bad in err, f"{name}: the message does not name {bad}\n{err[-3000:]}"
        assert "Traceback" not in err and "C++ Traceback" not in err, f"{name}:\n{err[-3000:]}"


def processes_naming(path, grace_s=20.0):
    """Pids of live processes whose command line names ``path``, after up to ``grace_s`` for them to end."""
    end = time.time() + grace_s
    while True:
        alive = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if str(path).encode() in f.read():
                        alive.append(int(pid))
            except OSError:  # ended meanwhile
                pass
        if not alive or time.time() > end:
            return alive
        time.sleep(0.5)
