"""segkit.ops: building the oneDNN operator once per machine, and falling back when it cannot be built."""

import ast
import fnmatch
import os
import re
import subprocess
import sys

import paddle
import pytest

from segkit import ops
from segkit.models.layers import Conv2D, paddle_kernels

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROBE = "from segkit import ops; print('available', ops.available())"


def _python(code: str, cache: str, **env) -> subprocess.Popen:
    """A Python process running ``code`` with segkit's build cache in ``cache``."""
    environment = dict(os.environ, SEGKIT_CACHE_DIR=cache, PYTHONPATH=REPO, PYTHONWARNINGS="ignore", **env)
    return subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=environment, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _finish(process: subprocess.Popen, timeout: int = 300) -> str:
    out, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, out
    return out


@pytest.mark.timeout(600)
def test_two_processes_starting_together_build_once(tmp_path):
    """Two ranks starting at once: one builds, the other waits for it; no half-built folder is left."""
    cache = str(tmp_path / "cache")
    outputs = [_finish(p) for p in [_python(PROBE, cache), _python(PROBE, cache)]]
    assert all("available True" in out for out in outputs), outputs
    # only the finished build and its lock: no staging or failed folder (a second build would have
    # failed to move its staging folder onto the first one's)
    (built,) = [name for name in os.listdir(os.path.join(cache, "ops")) if not name.endswith(".lock")]
    assert sorted(os.listdir(os.path.join(cache, "ops"))) == [built, built + ".lock"]
    assert os.path.isfile(os.path.join(cache, "ops", built, "segkit_onednn", "segkit_onednn.so"))
    # a later process loads the cached library: no build log is written again
    log = os.path.join(cache, "ops", built, "build.log")
    before = os.stat(log).st_mtime_ns
    assert "available True" in _finish(_python(PROBE, cache))
    assert os.stat(log).st_mtime_ns == before


def test_build_failure_names_the_log_and_falls_back(tmp_path):
    """Headers that do not compile: one warning naming the compiler's log and the fix; convolutions
    still run, on Paddle's kernel."""
    include = tmp_path / "include" / "oneapi" / "dnnl"
    include.mkdir(parents=True)
    # the missing include is fatal: g++ stops there instead of parsing Paddle's headers after the #error (5 s)
    (include / "dnnl.hpp").write_text('#error "not oneDNN"\n#include "not_onednn.h"\n')
    code = PROBE + "; from segkit.models.layers import Conv2D; import paddle; print(Conv2D(3, 4, 3, padding=1)(paddle.ones([1, 3, 8, 8])).shape)"
    out = _finish(_python(code, str(tmp_path / "cache"), SEGKIT_ONEDNN_INCLUDE=str(tmp_path / "include")))
    warnings = [line for line in out.splitlines() if "oneDNN operators are off" in line]
    assert len(warnings) == 1, out
    log = warnings[0].split("output is in ")[1].split()[0].rstrip(".")
    assert "not oneDNN" in open(log).read()
    assert "onednn-devel" in warnings[0] and "available False" in out and "[1, 4, 8, 8]" in out
    # the next process does not compile again: it names the same log at once
    before = os.stat(log).st_mtime_ns
    again = _finish(_python(PROBE, str(tmp_path / "cache"), SEGKIT_ONEDNN_INCLUDE=str(tmp_path / "include")))
    assert "failed before" in again and log in again and "available False" in again
    assert os.stat(log).st_mtime_ns == before and len(os.listdir(tmp_path / "cache" / "ops")) == 2


def test_switched_off_silently_by_the_environment(tmp_path):
    out = _finish(_python(PROBE, str(tmp_path / "cache"), SEGKIT_ONEDNN="0"))
    assert out.strip().splitlines()[-1] == "available False", out
    assert "oneDNN" not in out and not os.path.exists(tmp_path / "cache")


def test_conv2d_falls_back_where_onednn_does_not_apply():
    """Traced programs, float64, string padding, 1x1 convolutions and paddle_kernels() take Paddle's kernel."""
    assert ops.available()
    calls = []
    original = ops.conv2d
    ops.conv2d = lambda *args: calls.append(1) or original(*args)
    try:
        conv = Conv2D(4, 4, 3, padding="same")
        x = paddle.randn([1, 4, 9, 9])
        conv(x)
        with paddle_kernels():
            Conv2D(4, 4, 3, padding=1)(x)
        Conv2D(4, 8, 1)(x)
        conv64 = Conv2D(4, 4, 3, padding=1)
        conv64.to(dtype="float64")
        conv64(x.astype("float64"))
        paddle.jit.to_static(Conv2D(4, 4, 3, padding=1), full_graph=True)(x)
        assert not calls
        Conv2D(4, 4, 3, padding=1)(x)
        assert calls == [1]
    finally:
        ops.conv2d = original


def test_every_file_the_build_reads_ships_with_the_package():
    """``pip install .`` (not editable) copies ``setup.py``'s package_data: it must hold every file the
    first-use build compiles or includes (a missing one made the build fail on such installs)."""
    with open(os.path.join(REPO, "setup.py"), encoding="utf-8") as f:
        globs = ast.literal_eval(re.search(r'"segkit\.ops": (\[[^\]]*\])', f.read()).group(1))
    for path in [ops._UNIT] + ops._SOURCES:
        assert os.path.isfile(path), path
        assert any(fnmatch.fnmatch(os.path.basename(path), pattern) for pattern in globs), (path, globs)


@pytest.mark.timeout(300)
def test_parallel_loops_run_on_the_openmp_runtime_onednn_uses():
    """segkit's OpenMP loops and Paddle's oneDNN bind their OpenMP entry points to one runtime: on two, a oneDNN
    call inside a loop saw no parallel region and started threads of its own, and each runtime's idle threads
    spun on the cores the other needed. Read from the dynamic linker's bindings in a fresh process."""
    code = ("import paddle; from segkit import ops; assert ops.available()\n"
            "ops.stripe_attention(paddle.randn([1, 4, 4, 16]), 1, 2)\n")
    out = _finish(_python(code, ops.cache_root(), LD_DEBUG="bindings"))
    binding = re.compile(r"binding file (\S+) \[\d+\] to (\S+) \[\d+\]: normal symbol `((?:GOMP|omp)_\w+)'")
    runtimes = {}
    for binder, library, symbol in binding.findall(out):
        name = os.path.basename(binder)
        if name.startswith("segkit_onednn") or (name.startswith("libdnnl") and symbol == "GOMP_parallel"):
            runtimes.setdefault(name.split(".")[0], set()).add(os.path.basename(library))
    assert set(runtimes) == {"segkit_onednn", "libdnnl"}, runtimes
    assert runtimes["segkit_onednn"] == runtimes["libdnnl"], runtimes
