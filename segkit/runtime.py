"""Process-wide runtime settings: the device, compute threads and the C allocator.

These change the whole process, so the library never applies them by itself: the tools call them
once at start-up (``tools/train.py``, ``tools/val.py``, ``tools/predict.py``), and a program using
segkit as a library may call them too.

* Device. ``--device cpu|gpu|xpu|npu|mlu`` as in PaddleSeg; unlike PaddleSeg, which silently
  falls back to the CPU, a device this Paddle build cannot use is an error saying so.
* Threads. Paddle's dygraph runs every CPU op on **one** thread unless told otherwise (the
  ``FLAGS_paddle_num_threads`` flag does not change it; ``core.set_num_threads`` does, for Paddle's
  kernels, oneDNN and ``segkit.ops``, which share Paddle's OpenMP runtime), so by default the tools use
  every core this process may run on. With several ranks on one machine the
  cores are shared out between them, and DataLoader worker processes compute on one thread each
  (their OpenCV included), so that workers and the model do not fight over the cores.
* Allocator. ``reuse_freed_buffers`` keeps freed tensors' memory for the next ones instead of
  faulting fresh pages in for every large tensor.
"""

import ctypes
import math
import os
import signal
import sys
from typing import Optional

from segkit.errors import ConfigError


def available_cores() -> int:
    """The cores this process may use: its CPU affinity, capped by a cgroup CPU quota if one is set."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    return max(1, min(cores, quota)) if quota else max(1, cores)


def _cgroup_cpu_quota() -> Optional[int]:
    """``ceil(quota / period)`` from cgroup v2 ``cpu.max`` (or v1), or None when unlimited or unknown."""
    candidates = (("/sys/fs/cgroup/cpu.max", None),
                  ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "/sys/fs/cgroup/cpu/cpu.cfs_period_us"))
    for path, period_path in candidates:
        try:
            with open(path) as f:
                fields = f.read().split()
            if period_path:
                with open(period_path) as f:
                    fields.append(f.read().strip())
        except OSError:
            continue
        if len(fields) >= 2 and fields[0] not in ("max", "-1") and float(fields[1]) > 0:
            return math.ceil(float(fields[0]) / float(fields[1]))
        return None
    return None


def local_processes() -> int:
    """How many segkit processes ``paddle.distributed.launch`` started on this machine (1 without it)."""
    try:
        return max(1, int(os.environ.get("PADDLE_LOCAL_SIZE", "1")))
    except ValueError:
        return 1


def set_threads(threads: Optional[int] = None, world_size: Optional[int] = None) -> int:
    """Set the number of CPU compute threads of Paddle (and OpenCV) for this process.

    Args:
        threads: threads per process; None uses every available core, shared equally between
            ``world_size`` processes on this machine.
        world_size: processes (ranks) running on this machine; None reads it from the launcher.

    Returns:
        The number of threads set.

    Raises:
        ConfigError: ``threads`` is less than 1.
    """
    if threads is not None and threads < 1:
        raise ConfigError(f"--threads: must be at least 1 (default: all {available_cores()} cores), got {threads}.")
    if threads is None:
        threads = max(1, available_cores() // (world_size or local_processes()))
    from paddle.base import core

    core.set_num_threads(threads)
    _set_gnu_openmp_threads(threads)
    _set_opencv_threads(threads)
    return threads


def _set_gnu_openmp_threads(threads: int) -> None:
    """GNU OpenMP's thread count, which Paddle's ``set_num_threads`` leaves alone where Paddle ships Intel
    OpenMP: oneDNN and ``segkit.ops`` run on Paddle's runtime, but other libraries may use GNU's."""
    try:
        ctypes.CDLL("libgomp.so.1").omp_set_num_threads(threads)
    except (OSError, AttributeError):  # no GNU OpenMP here: nothing of segkit's runs on it
        pass


def _set_opencv_threads(threads: int) -> None:
    try:
        import cv2
    except ImportError:  # OpenCV is optional for the library
        return
    cv2.setNumThreads(threads)


def worker_init(worker_id: int) -> None:  # noqa: ARG001 (the DataLoader's worker_init_fn signature)
    """``worker_init_fn`` for DataLoader workers: one compute thread each, so that N workers and the
    model's threads do not oversubscribe the cores; on Linux, the worker ends with its parent; and it
    ignores SIGINT and SIGTERM: a terminal's Ctrl-C (and ``timeout`` or a batch scheduler's SIGTERM)
    reaches the whole process group, and the main process, which stops cleanly between iterations,
    then stops its workers itself (``segkit.engine.loader``)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    set_threads(1)
    end_with_parent()


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def end_with_parent() -> None:
    """Have the kernel kill this process when the process that forked it dies (Linux).

    A training rank that stops on an error under ``paddle.distributed.launch`` leaves at once
    (``os._exit``, or the launcher's SIGTERM), with no chance to stop its DataLoader workers; without
    this they would wait on their index queues forever, orphaned. (The kernel acts when the forking
    thread ends; Paddle's DataLoader forks its workers from the thread that iterates it.)
    """
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


DEVICES = ("cpu", "gpu", "xpu", "npu", "mlu")


def _device_missing(device: str) -> Optional[str]:
    """Why this Paddle build cannot run on ``device``, or None when it can."""
    import paddle

    if device == "gpu":
        if not paddle.device.is_compiled_with_cuda():
            return "it is built without CUDA (install paddlepaddle-gpu)"
        if paddle.device.cuda.device_count() == 0:
            return "it sees no GPU (check CUDA_VISIBLE_DEVICES and the driver)"
    elif device == "xpu" and not paddle.device.is_compiled_with_xpu():
        return "it is built without XPU support (install the XPU build of Paddle)"
    elif device in ("npu", "mlu") and device not in paddle.device.get_all_custom_device_type():
        return f"no {device.upper()} plug-in is installed (install Paddle's custom-device package for it)"
    return None


def set_device(device: Optional[str] = None) -> str:
    """Run on ``device`` (PaddleSeg's ``--device``); None keeps Paddle's default. Returns the device used.

    Raises:
        ConfigError: an unknown device, or one this Paddle build cannot use.
    """
    import paddle

    if device is None:
        return paddle.get_device()
    if device not in DEVICES:
        raise ConfigError(f"--device {device}: expected one of {', '.join(DEVICES)}.")
    reason = _device_missing(device)
    if reason:
        raise ConfigError(f"--device {device}: this Paddle build ({paddle.__version__}) cannot run on "
                          f"{device.upper()}: {reason}; or use --device cpu.")
    paddle.set_device(device)
    return paddle.get_device()


def configure_process(threads: Optional[int] = None, device: Optional[str] = None) -> int:
    """Apply every process-wide setting of a tool; returns the number of compute threads.

    The one call each tool makes at start (train, val, predict and export alike), so evaluation
    during training runs with the same device and threads as ``tools/val.py``.

    Args:
        threads: compute threads (None: every available core, shared between local ranks).
        device: Paddle device, or None for Paddle's default.
    """
    set_device(device)
    threads = set_threads(threads)
    reuse_freed_buffers()
    return threads


# glibc's mallopt parameters
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
# ``reuse_freed_buffers``' setting: buffers below REUSE_LIMIT bytes come from the heap, up to REUSE_KEEP bytes of it
# stay when freed
REUSE_LIMIT, REUSE_KEEP = 32 << 20, 1 << 30


def _mallopt(*settings) -> bool:
    """glibc ``mallopt(parameter, value)`` for each pair; whether all were applied (glibc on Linux only)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return all([bool(libc.mallopt(parameter, value)) for parameter, value in settings])
    except (OSError, AttributeError):  # another C library (e.g. musl)
        return False


def reuse_freed_buffers(limit: int = REUSE_LIMIT, keep: int = REUSE_KEEP) -> bool:
    """Make glibc keep freed buffers below ``limit`` bytes in the heap for the next tensors.

    Paddle's CPU tensors are plain ``malloc`` blocks. By default glibc serves large ones with ``mmap``
    (or trims the heap after they are freed), so each fresh multi-MB tensor first takes a page fault
    per 4 KiB page: on this 2-core VM an 8 MiB copy took 4.5 ms instead of 0.7 ms, and an HRViT-b1
    forward at 512x512 took 64,000 faults (none with this setting). With a fixed mmap threshold of
    ``limit`` and up to ``keep`` bytes of free heap kept (not trimmed: a training step frees its
    activations, then the next forward would fault them in again) that memory is reused; larger
    buffers (full-resolution maps) are still mapped for themselves and handed back to the OS when
    freed, so the resident size stays flat image after image (``benchmarks/bench_eval_memory.py``).
    Applied by ``configure_process``. Returns whether the setting was applied.
    """
    return _mallopt((_M_MMAP_THRESHOLD, limit), (_M_TRIM_THRESHOLD, keep))


def return_large_buffers_to_os(threshold: int = 128 * 1024) -> bool:
    """Make glibc serve every allocation of ``threshold`` bytes or more with its own ``mmap`` (the lowest
    resident size, segkit's setting before ``reuse_freed_buffers``: an HRViT-b1 forward at 512x512 took
    2.1-2.9 s instead of 1.2-1.3 s with it, 2 threads). Returns whether the setting was applied.
    """
    return _mallopt((_M_MMAP_THRESHOLD, threshold))


# The allocator settings by name: the tools' (``configure_process``), the earlier one and glibc's own
# (``benchmarks/bench_eval_memory.py --allocator``, tests)
ALLOCATORS = {"reuse": reuse_freed_buffers, "release": return_large_buffers_to_os, "default": lambda: False}
