"""Compiled operators for Paddle's dygraph on the CPU: convolutions, softmax, GELU, layer normalisation,
the pixel-wise softmax cross-entropy and linears without gradients computed by oneDNN, and a bilinear
resize and HRViT's stripe attention of segkit's own.

Paddle 3.3's dygraph computes a CPU convolution as an im2col copy and a GEMM per group, and its
oneDNN kernels never run there (they do in exported programs, see ``segkit.engine.backends``). A
depth-wise 7x7 convolution on 1x64x128x128 took 72 ms forward against oneDNN's 2.6 ms, a dense 3x3 on
2x64x128x256 150 ms against 21 ms (``benchmarks/bench_layers.py``). Its CPU softmax, GELU, LayerNorm
and cross-entropy kernels run on one thread whatever the thread count (the LayerNorm backward and
the cross-entropy over axis 1 slowly even so). segkit calls oneDNN, the library Paddle ships in
``paddle/libs``, through small C++ operators with their gradients (``onednn_conv.cc``,
``onednn_nn.cc``; ``onednn_linear.cc`` has none; ``resize.cc`` and HRViT's ``stripe_attention.cc`` are
plain C++ with OpenMP, the latter calling oneDNN's sgemm), compiled once per machine and Paddle version
with ``paddle.utils.cpp_extension`` the first time one runs (about 20 s; cached in ``~/.cache/segkit/ops``,
or under ``$SEGKIT_CACHE_DIR``). Building needs g++ and oneDNN's C++ headers, which Paddle's wheel leaves
out: ``pip install --no-deps onednn-devel==2025.0.0`` (headers only, 0.2 MB).

``SEGKIT_ONEDNN=0`` switches them off. Where they cannot be built, one warning line says why and
Paddle's kernels run; callers fall back to Paddle's kernels themselves elsewhere (traced programs,
GPU tensors, other dtypes, mixed precision), see ``segkit.models.layers.onednn_applies`` and
``conv2d_nchw``.
"""

import contextlib
import fcntl
import hashlib
import os
import shutil
import site
import subprocess
import sys
import sysconfig
from typing import Iterator, List, Optional, Sequence, Tuple

import paddle
from paddle import _C_ops
from paddle.utils.cpp_extension.extension_utils import load_op_meta_info_and_register_op

from segkit.logger import logger

_OPS = ("segkit_conv2d", "segkit_softmax", "segkit_gelu", "segkit_layer_norm", "segkit_softmax_ce",
        "segkit_resize_bilinear", "segkit_linear", "segkit_stripe_attention")
_HERE = os.path.dirname(os.path.abspath(__file__))
_UNIT = os.path.join(_HERE, "operators.cc")  # the file compiled: it includes the others
_SOURCES = [os.path.join(_HERE, name)
            for name in ("onednn_conv.cc", "onednn_linear.cc", "onednn_nn.cc", "resize.cc", "stripe_attention.cc",
                         "onednn_common.h")]
_HEADERS_HINT = "pip install --no-deps onednn-devel==2025.0.0"
_state = {"loaded": None}  # None: not tried yet in this process
# Run by a child Python: argv = the build folder, oneDNN's include folder, Paddle's libs folder, the OpenMP link
# flag, the sources.
_BUILD_SCRIPT = ("import sys\nfrom paddle.utils.cpp_extension import load\n"
                 "load(name='segkit_onednn', sources=sys.argv[5:], build_directory=sys.argv[1], "
                 "extra_include_paths=[sys.argv[2]], extra_cxx_cflags=['-O3', '-fopenmp'], "
                 "extra_ldflags=[sys.argv[4], '-L' + sys.argv[3], '-l:libdnnl.so.3', '-Wl,-rpath,' + sys.argv[3]])\n")
# Paddle's oneDNN runs its threads on the Intel OpenMP runtime Paddle ships (it binds GOMP_parallel and
# omp_in_parallel there). segkit's own parallel loops link against the same runtime: on GNU OpenMP, a oneDNN
# call inside them saw no parallel region and started threads of its own (HRViT's stripe attention: two
# sgemm threads per loop thread on two cores), and each runtime's idle threads spun on the cores the other
# needed.
_INTEL_OPENMP = "libiomp5.so"


def _library_in(build_dir: str) -> str:
    """The shared library Paddle's builder writes into ``build_dir``."""
    return os.path.join(build_dir, "segkit_onednn", "segkit_onednn.so")


class Unavailable(Exception):
    """The operator cannot be built or loaded here (the message says why and how to fix it)."""


def cache_root() -> str:
    """Where segkit keeps what it builds: ``$SEGKIT_CACHE_DIR``, else ``~/.cache/segkit``."""
    return os.environ.get("SEGKIT_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "segkit")


def _header_dir() -> str:
    """The include folder holding ``oneapi/dnnl/dnnl.hpp`` (``$SEGKIT_ONEDNN_INCLUDE`` first)."""
    candidates = [os.environ.get("SEGKIT_ONEDNN_INCLUDE"), os.path.join(sysconfig.get_paths()["data"], "include"),
                  os.path.join(sys.base_prefix, "include"), os.path.join(site.getuserbase(), "include")]
    for folder in candidates:
        if folder and os.path.isfile(os.path.join(folder, "oneapi", "dnnl", "dnnl.hpp")):
            return folder
    raise Unavailable(f"oneDNN's C++ headers (oneapi/dnnl/dnnl.hpp) were not found; install them with `{_HEADERS_HINT}`")


def _paddle_libs() -> str:
    """Paddle's folder of shared libraries, which holds the oneDNN the operator links against."""
    folder = os.path.join(os.path.dirname(paddle.__file__), "libs")
    if not os.path.isfile(os.path.join(folder, "libdnnl.so.3")):
        raise Unavailable(f"this Paddle build ships no oneDNN ({folder}/libdnnl.so.3 is missing)")
    return folder


def _intel_openmp(libs: str) -> Optional[str]:
    """The Intel OpenMP library in Paddle's ``libs`` folder, None where its wheel ships none."""
    path = os.path.join(libs, _INTEL_OPENMP)
    return path if os.path.isfile(path) else None


def _openmp_link_flag(libs: str) -> str:
    """Link against Paddle's Intel OpenMP where its wheel ships one, else GNU OpenMP."""
    return "-l:" + _INTEL_OPENMP if _intel_openmp(libs) else "-fopenmp"


def _build_dir() -> str:
    """The cache folder of this source, Paddle build and header folder."""
    digest = hashlib.sha256()
    for path in [_UNIT] + _SOURCES:
        with open(path, "rb") as f:
            digest.update(f.read())
    digest.update(_BUILD_SCRIPT.encode())
    digest.update(f"{paddle.__version__} {paddle.version.commit} {_header_dir()} {sys.version}".encode())
    return os.path.join(cache_root(), "ops", "onednn-" + digest.hexdigest()[:16])


def _compile(build_dir: str) -> None:
    """Build the operator into ``build_dir`` (in a child process: Paddle's builder prints and registers
    what it builds; a half-built folder is never left under the final name)."""
    libs, include = _paddle_libs(), _header_dir()
    staging = f"{build_dir}.building-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
    log = os.path.join(staging, "build.log")
    with open(log, "w") as out:
        done = subprocess.run([sys.executable, "-c", _BUILD_SCRIPT, staging, include, libs, _openmp_link_flag(libs),
                               _UNIT],
                              stdout=out, stderr=subprocess.STDOUT, timeout=600)
    if done.returncode != 0 or not os.path.isfile(_library_in(staging)):
        failed = f"{build_dir}.failed"
        shutil.rmtree(failed, ignore_errors=True)
        os.replace(staging, failed)
        raise Unavailable(f"building the operator failed (g++ and {_HEADERS_HINT} are needed); "
                          f"the compiler's output is in {failed}/build.log")
    os.replace(staging, build_dir)


@contextlib.contextmanager
def _locked(path: str) -> Iterator[None]:
    """An exclusive lock on ``path`` across processes (two ranks starting together build once)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _load() -> None:
    """Build the operator unless cached, then register it with Paddle."""
    build_dir = _build_dir()
    library = _library_in(build_dir)
    failed = f"{build_dir}.failed"
    if os.path.isdir(failed):  # not retried by every process: the build depends on nothing that changed
        raise Unavailable(f"building the operator failed before (g++ and {_HEADERS_HINT} are needed); the "
                          f"compiler's output is in {failed}/build.log (delete that folder to try again)")
    try:
        with _locked(build_dir + ".lock"):
            if not os.path.isfile(library):
                _compile(build_dir)
    except (OSError, subprocess.SubprocessError) as error:
        raise Unavailable(f"building the operator in {os.path.dirname(build_dir)} failed: {error}") from error
    missing = set(_OPS) - set(load_op_meta_info_and_register_op(library))
    if missing:
        raise Unavailable(f"{library} does not define {', '.join(sorted(missing))}")


def available() -> bool:
    """Whether the oneDNN operators run in this process (built and loaded on the first call)."""
    if _state["loaded"] is None:
        _state["loaded"] = False
        if os.environ.get("SEGKIT_ONEDNN", "1") != "0":
            try:
                _load()
                _state["loaded"] = True
            except Unavailable as reason:
                logger.warning(f"segkit's oneDNN operators are off: {reason}. Paddle's own CPU kernels run "
                               "instead (convolutions several times slower); SEGKIT_ONEDNN=0 silences this.")
    return _state["loaded"]


def _pair(value) -> List[int]:
    return [int(value)] * 2 if isinstance(value, int) else [int(v) for v in value]


def conv2d(x: paddle.Tensor, weight: paddle.Tensor, bias: Optional[paddle.Tensor], stride: Sequence[int],
           padding: Sequence[int], dilation: Sequence[int], groups: int, channels_last: bool = False) -> paddle.Tensor:
    """``F.conv2d`` (NCHW, or NHWC with ``channels_last``; float32, CPU, contiguous, symmetric integer padding)
    by oneDNN; ``available()`` must hold."""
    bias = paddle.empty([0], dtype="float32") if bias is None else bias  # zero elements: no bias
    (out,) = _C_ops._run_custom_op("segkit_conv2d", x, weight, bias, _pair(stride),
                                   _pair(padding), _pair(dilation), int(groups), bool(channels_last))
    return out


def linear(x: paddle.Tensor, weight: paddle.Tensor, bias: Optional[paddle.Tensor]) -> paddle.Tensor:
    """``F.linear(x, weight, bias)`` (float32, CPU) by one oneDNN product with the bias in its epilogue, without
    a gradient; ``available()`` must hold."""
    bias = paddle.empty([0], dtype="float32") if bias is None else bias  # zero elements: no bias
    (out,) = _C_ops._run_custom_op("segkit_linear", x, weight, bias)
    return out


def softmax(x: paddle.Tensor) -> paddle.Tensor:
    """``F.softmax(x, axis=-1)`` (float32, CPU, contiguous) by oneDNN; ``available()`` must hold."""
    (out,) = _C_ops._run_custom_op("segkit_softmax", x)
    return out


def gelu(x: paddle.Tensor) -> paddle.Tensor:
    """``F.gelu(x)`` (the exact erf form; float32, CPU, contiguous) by oneDNN; ``available()`` must hold."""
    (out,) = _C_ops._run_custom_op("segkit_gelu", x)
    return out


def layer_norm(x: paddle.Tensor, weight: paddle.Tensor, bias: paddle.Tensor, epsilon: float) -> paddle.Tensor:
    """``F.layer_norm`` over the last axis with a weight and a bias (float32, CPU, contiguous) by oneDNN;
    ``available()`` must hold."""
    out, _, _ = _C_ops._run_custom_op("segkit_layer_norm", x, weight, bias, float(epsilon))
    return out


def softmax_cross_entropy(logits: paddle.Tensor, label: paddle.Tensor, ignore_index: int) -> paddle.Tensor:
    """Per-pixel cross-entropy of ``logits`` [N, C, ...] against int64 ``label`` [N, ...] over axis 1, 0 (and
    no gradient) where the label is ``ignore_index`` (float32, CPU, contiguous) by oneDNN; a label outside
    [0, C) raises. ``available()`` must hold."""
    loss, _ = _C_ops._run_custom_op("segkit_softmax_ce", logits, label, int(ignore_index))
    return loss


def resize_bilinear(x: paddle.Tensor, rows: paddle.Tensor, cols: paddle.Tensor) -> paddle.Tensor:
    """Bilinear resize of NCHW float32 ``x`` by the tap tables ``rows`` [OH, 3] and ``cols`` [OW, 3] (low
    index, high index, weight of the high one; see ``segkit.models.layers._bilinear_taps``), with its
    gradient; ``available()`` must hold."""
    (out,) = _C_ops._run_custom_op("segkit_resize_bilinear", x, rows, cols)
    return out


def stripe_attention(qv: paddle.Tensor, heads: int, stripe: int) -> Tuple[paddle.Tensor, paddle.Tensor]:
    """HRViT's cross-shaped attention of ``qv`` [B, H, W, 4 * heads * d] (scaled queries of the horizontal then
    the vertical heads, then their values) with its gradient: the output and the values, both
    [B, H, W, 2 * heads * d] (float32, CPU, contiguous; see ``stripe_attention.cc``); ``available()`` must hold."""
    out, values = _C_ops._run_custom_op("segkit_stripe_attention", qv, int(heads), int(stripe))
    return out, values
