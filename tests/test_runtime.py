"""Process-wide runtime settings: compute threads (all cores by default, --threads N) and workers."""

import os
import subprocess
import sys

import cv2
import pytest
from conftest import QUICKSTART, ROOT

from segkit import runtime
from segkit.errors import ConfigError

# In a fresh process: how many OS threads exist after a matmul on 1 thread, then after one on 3.
THREAD_PROBE = """
import os, paddle
from segkit import runtime
x = paddle.randn([256, 256])
runtime.set_threads(1); (x @ x).numpy(); one = len(os.listdir('/proc/self/task'))
runtime.set_threads(3); (x @ x).numpy(); three = len(os.listdir('/proc/self/task'))
print(one, three)
"""


@pytest.mark.timeout(120)
def test_set_threads_reaches_paddles_cpu_kernels():
    run = subprocess.run([sys.executable, "-c", THREAD_PROBE], cwd=ROOT, capture_output=True, text=True, timeout=100)
    assert run.returncode == 0, run.stderr
    one, three = map(int, run.stdout.split()[-2:])
    assert three > one  # Paddle started extra compute threads (its math library caps them at the cores)


# The thread counts of the OpenMP runtime oneDNN and segkit's operators run on (Paddle's Intel OpenMP where it
# ships one) and of GNU OpenMP (other libraries'), read in a fresh process after set_threads.
OPENMP_PROBE = """
import ctypes, paddle
from segkit import ops, runtime
from segkit.models.layers import Conv2D
segkits = ctypes.CDLL(ops._intel_openmp(ops._paddle_libs()) or "libgomp.so.1")
gomp = ctypes.CDLL("libgomp.so.1")
counts = []
for threads in (1, 2):
    runtime.set_threads(threads)
    Conv2D(4, 4, 3, padding=1)(paddle.ones([1, 4, 8, 8])).numpy()
    counts += [segkits.omp_get_max_threads(), gomp.omp_get_max_threads()]
print(ops.available(), *counts)
"""


@pytest.mark.timeout(300)
def test_set_threads_reaches_onednn_and_segkits_operators():
    run = subprocess.run([sys.executable, "-c", OPENMP_PROBE], cwd=ROOT, capture_output=True, text=True, timeout=280)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split()[-5:] == ["True", "1", "1", "2", "2"], run.stdout


# Page faults per copy of an 8 MiB tensor (after the first copies) in a fresh process, per allocator setting.
ALLOCATOR_PROBE = """
import resource, sys, paddle
from segkit import runtime
runtime.ALLOCATORS[sys.argv[1]]()
x = paddle.randn([1, 128, 128, 128])
for _ in range(20):  # the heap settles
    y = x.clone()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    y = x.clone()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20)
"""


@pytest.mark.timeout(120)
def test_reused_buffers_take_no_page_faults():
    """The tools' allocator setting serves a tensor from freed memory; the release setting faults in every
    page of it (2048 per 8 MiB), which is what made large tensors several times slower to fill."""
    faults = {}
    for setting in ("reuse", "release"):
        run = subprocess.run([sys.executable, "-c", ALLOCATOR_PROBE, setting], cwd=ROOT, capture_output=True,
                             text=True, timeout=50)
        assert run.returncode == 0, run.stderr
        faults[setting] = float(run.stdout.split()[-1])
    assert faults["reuse"] < 50 and faults["release"] > 1500, faults


def test_default_uses_every_core_shared_between_local_ranks(monkeypatch):
    monkeypatch.setattr(runtime, "available_cores", lambda: 8)
    monkeypatch.setattr(runtime, "_set_opencv_threads", lambda n: None)
    monkeypatch.setattr(runtime, "_set_gnu_openmp_threads", lambda n: None)
    calls = []
    from paddle.base import core

    monkeypatch.setattr(core, "set_num_threads", calls.append)
    assert runtime.set_threads() == 8
    monkeypatch.setenv("PADDLE_LOCAL_SIZE", "2")  # set by paddle.distributed.launch for each process
    assert runtime.set_threads() == 4
    assert runtime.set_threads(3) == 3
    assert calls == [8, 4, 3]


def test_available_cores_follows_the_affinity_mask():
    assert runtime.available_cores() <= len(os.sched_getaffinity(0))
    assert runtime.available_cores() >= 1


def test_dataloader_workers_compute_on_one_thread():
    before = cv2.getNumThreads()
    try:
        runtime.worker_init(0)
        assert cv2.getNumThreads() == 1
    finally:
        cv2.setNumThreads(before)


@pytest.mark.timeout(120)
def test_threads_flag_is_checked_by_the_tools():
    run = subprocess.run([sys.executable, "tools/val.py", "--config", QUICKSTART, "--model_path", "x", "--threads", "0"],
                         cwd=ROOT, capture_output=True, text=True, timeout=100)
    assert run.returncode == 2
    assert "--threads: must be at least 1" in run.stderr and "Traceback" not in run.stderr


def test_threads_must_be_positive():
    with pytest.raises(ConfigError, match="--threads"):
        runtime.set_threads(0)
