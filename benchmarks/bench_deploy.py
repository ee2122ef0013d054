"""Deployment speed: segkit's runtimes and its peers side by side, alternated, as a fraction of this CPU's peak.

    python benchmarks/bench_deploy.py [--rounds 5] [--rows segformer_b0 rtformer_slim ...] [--threads N]
        [--official /path/to/HRViT/models/hrvit.py]

Rows: SegFormer-B0 512x512, RTFormer-Slim 1024x512 and 2048x1024, SegNeXt-T 512x512, HRViT-b1
512x512 (random weights, 19 classes, batch 1, fp32). Columns: segkit dygraph, segkit Paddle Inference
(oneDNN with the pass workaround, or the fallback it reports; dynamic shape, and exported at the row's
fixed shape as ``tools/export.py --input_shape`` does), segkit ONNX Runtime, segkit OpenVINO
(when installed), PaddleSeg 2.8 dygraph and its export (traced as its export.py does, dynamic shape or
else the row's fixed shape, run by Paddle Inference; a printed line says why where it does not export)
for SegFormer, RTFormer and SegNeXt, and PyTorch peers in a worker process under
``/work/oracle-venv/bin/python`` (``_torch_worker.py``): HF transformers SegFormer-B0 (SegFormer row)
and the official HRViT-b1 backbone (HRViT row, with ``--official``; its fraction of peak counts the
backbone's MACs). Every round times each column once (in a rotating order) and a NumPy 2048^3 float32
matmul probe; a column's fraction of peak is (2 * MACs / its median time) / (2 * 2048^3 / the probe's
median time). MACs are counted by ``segkit.complexity.count_macs`` (convs, linears, matrix products).
"""

import argparse
import importlib.util
import os
import shutil
import sys
import tempfile
import time
from types import SimpleNamespace
from typing import Optional

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import paddle  # noqa: E402

from segkit.complexity import count_macs  # noqa: E402
from segkit.engine.backends import DeployError, RuntimeOptions, create_backend  # noqa: E402
from segkit.engine.export import export_model  # noqa: E402
from segkit.engine.onnx_export import convert_to_onnx  # noqa: E402
import segkit.models  # noqa: E402,F401  (registers the models)
from segkit.registry import MODELS  # noqa: E402
from bench_vs_pytorch import PAUSE_SECONDS, TorchWorker  # noqa: E402  (the PyTorch worker process, alternated per round)

ROWS = {  # name -> (segkit variant, H, W)
    "segformer_b0": ("segformer_b0", 512, 512),
    "rtformer_slim": ("rtformer_slim", 512, 1024),
    "rtformer_slim_2048": ("rtformer_slim", 1024, 2048),
    "segnext_t": ("segnext_t", 512, 512),
    "hrvit_b1": ("hrvit_b1", 512, 512),
}
ORACLE_PYTHON = "/work/oracle-venv/bin/python"
PYTORCH_PEERS = {"segformer_b0": "HF transformers SegFormer, PyTorch", "hrvit_b1": "official HRViT backbone, PyTorch"}


def matmul_probe() -> float:
    """Seconds of one 2048^3 float32 matmul in NumPy."""
    a = np.random.default_rng(0).random((2048, 2048), dtype=np.float32)
    start = time.perf_counter()
    a @ a
    return time.perf_counter() - start


def paddleseg_model(variant: str):
    """The PaddleSeg 2.8 dygraph model of a row, or None where there is none to compare."""
    try:
        if variant == "segformer_b0":
            from paddleseg.models import SegFormer
            from paddleseg.models.backbones import MixVisionTransformer_B0
            return SegFormer(num_classes=19, backbone=MixVisionTransformer_B0(), embedding_dim=256)
        if variant == "rtformer_slim":
            from paddleseg.models import RTFormer
            return RTFormer(num_classes=19, base_channels=32, head_channels=64)
        if variant == "segnext_t":
            from paddleseg.models import SegNeXt
            from paddleseg.models.backbones import MSCAN_T
            return SegNeXt(MSCAN_T(), {"channels": 256, "ham_channels": 256, "ham_kwargs": {"MD_R": 16}}, 19)
    except ImportError:
        return None
    return None


def exported(variant: str, workdir: str):
    """The row's model (seeded random weights, eval mode) and its export folder under ``workdir``
    (Paddle program with dynamic shape and logits out, and the checked ``model.onnx``)."""
    paddle.seed(0)
    model = MODELS.get(variant)(num_classes=19)
    model.eval()
    save_dir = os.path.join(workdir, variant)
    if not os.path.isdir(save_dir):
        export_model(model, save_dir, output_op="none")
        convert_to_onnx(save_dir, simplify=False)
    return model, save_dir


def columns_for(variant: str, height: int, width: int, workdir: str):
    """name -> zero-argument callable running one batch-1 inference, for every column that runs here."""
    model, save_dir = exported(variant, workdir)
    x = np.random.default_rng(0).normal(size=(1, 3, height, width)).astype("float32")
    tensor = paddle.to_tensor(x)
    runs = {}

    def run_dygraph():
        with paddle.no_grad():
            return model(tensor)
    runs["segkit dygraph"] = run_dygraph
    paddle_backend = create_backend(save_dir, RuntimeOptions("paddle"))
    runs[f"segkit Paddle Inference ({paddle_backend.mode})"] = lambda: paddle_backend.run(x)
    fixed_dir = os.path.join(workdir, f"{variant}_{height}x{width}")
    if not os.path.isdir(fixed_dir):
        export_model(model, fixed_dir, input_shape=[1, 3, height, width], output_op="none")
    fixed_backend = create_backend(fixed_dir, RuntimeOptions("paddle"))
    runs[f"segkit Paddle Inference ({fixed_backend.mode}, fixed {height}x{width})"] = lambda: fixed_backend.run(x)
    ort_backend = create_backend(save_dir, RuntimeOptions("onnxruntime"))
    runs["segkit ONNX Runtime"] = lambda: ort_backend.run(x)
    if importlib.util.find_spec("openvino"):
        ov_backend = create_backend(save_dir, RuntimeOptions("openvino"))
        try:
            ov_backend.run(x)
            runs[f"segkit OpenVINO ({ov_backend.mode})"] = lambda: ov_backend.run(x)
        except DeployError as exc:
            print(f"segkit OpenVINO: {exc}")
    peer = paddleseg_model(variant)
    if peer is not None:
        peer.eval()

        def run_peer():
            with paddle.no_grad():
                return peer(tensor)
        runs["PaddleSeg 2.8 dygraph"] = run_peer
        runs.update(paddleseg_export_column(peer, os.path.join(workdir, f"paddleseg_{variant}"), height, width, x))
    return runs, count_macs(model, [1, 3, height, width]).total_macs, model


def paddleseg_export_column(peer, save_dir: str, height: int, width: int, x: np.ndarray):
    """PaddleSeg's model traced as its export.py does (dynamic shape, else this row's fixed shape) and run
    by Paddle Inference with segkit's oneDNN workaround; {} (and a printed reason) where it does not export."""
    for shape in ([None, 3, None, None], [1, 3, height, width]):
        try:
            if not os.path.isdir(save_dir):
                export_model(peer, save_dir, input_shape=shape, output_op="none")
            backend = create_backend(save_dir, RuntimeOptions("paddle"))
            backend.run(x)
        except Exception as exc:  # tracing or Paddle Inference failures of the peer's code
            print(f"PaddleSeg 2.8 export, input {shape}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
            shutil.rmtree(save_dir, ignore_errors=True)
            continue
        fixed = "" if shape[2] is None else f", fixed {height}x{width}"
        return {f"PaddleSeg 2.8 export, Paddle Inference ({backend.mode}{fixed})": lambda: backend.run(x)}
    return {}


def pytorch_columns(variant: str, size: int, threads: int, official: Optional[str], model):
    """The PyTorch peer of a row in a worker process (``_torch_worker.py`` under the oracle venv):
    ({name: run once}, {name: its MACs}, the worker or None). HF transformers SegFormer-B0 for the
    SegFormer row; the official HRViT-b1 backbone (``--official`` models/hrvit.py) for the HRViT row."""
    if variant not in PYTORCH_PEERS or not os.path.exists(ORACLE_PYTHON) or (variant == "hrvit_b1" and not official):
        return {}, {}, None
    name = PYTORCH_PEERS[variant]
    worker = TorchWorker(ORACLE_PYTHON, variant, threads, SimpleNamespace(size=size, official=official, train_batch=1))
    counted = model.backbone if variant == "hrvit_b1" else model  # the official code is the backbone only
    return {name: lambda: worker.time("forward")}, {name: count_macs(counted, [1, 3, size, size]).total_macs}, worker


def bench_row(name: str, args, workdir: str):
    """Median seconds per column, the probe's median and the MACs each column computes, for one row."""
    variant, height, width = ROWS[name]
    runs, macs, model = columns_for(variant, height, width, workdir)
    column_macs = {key: macs for key in runs}
    torch_runs, torch_macs, worker = pytorch_columns(variant, height, args.threads, args.official, model) \
        if height == width else ({}, {}, None)
    runs.update(torch_runs)
    column_macs.update(torch_macs)
    try:
        for fn in runs.values():  # warm-up
            fn()
        times = {key: [] for key in runs}
        probes = []
        keys = list(runs)
        for r in range(args.rounds):
            probes.append(matmul_probe())
            for key in keys[r % len(keys):] + keys[:r % len(keys)]:
                time.sleep(PAUSE_SECONDS)  # idle threads of the previous column stop spinning first
                start = time.perf_counter()
                runs[key]()
                times[key].append(time.perf_counter() - start)
    finally:
        if worker is not None:
            worker.close()
    return {key: float(np.median(v)) for key, v in times.items()}, float(np.median(probes)), column_macs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--official", help="the official HRViT models/hrvit.py (facebookresearch/HRViT), HRViT row")
    args = parser.parse_args(argv)
    paddle.set_flags({"FLAGS_use_mkldnn": False})
    paddle.framework.core.set_num_threads(args.threads)
    print(f"{args.threads} threads, {args.rounds} rounds per row, batch 1, fp32, random weights, 19 classes")
    print("| row | column | ms (median) | % of matmul peak | probe GFLOP/s |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as workdir:
        for name in args.rows:
            medians, probe, macs = bench_row(name, args, workdir)
            peak = 2 * 2048 ** 3 / probe
            best = min(medians, key=medians.get)
            for key, seconds in medians.items():
                share = 2 * macs[key] / seconds / peak
                mark = " (fastest)" if key == best else ""
                print(f"| {name} | {key}{mark} | {1e3 * seconds:.1f} | {100 * share:.1f}% | {peak / 1e9:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
