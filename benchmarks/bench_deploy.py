"""Deployment speed: segkit's runtimes and its peers side by side, alternated, as a fraction of this CPU's peak.

    python benchmarks/bench_deploy.py [--rounds 5] [--rows segformer_b0 rtformer_slim ...] [--threads N]

Rows: SegFormer-B0 512x512, RTFormer-Slim 1024x512 and 2048x1024, SegNeXt-T 512x512, HRViT-b1
512x512 (random weights, 19 classes, batch 1, fp32). Columns: segkit dygraph, segkit Paddle Inference
(oneDNN with the pass workaround, or the fallback it reports), segkit ONNX Runtime, PaddleSeg 2.8
dygraph (SegFormer, RTFormer, SegNeXt), and for SegFormer HuggingFace transformers in PyTorch
(``/work/oracle-venv/bin/python`` in a subprocess, timed there with the same rounds). Every round
times each column once (in a rotating order) and a NumPy 2048^3 float32 matmul probe; a model's
fraction of peak is (2 * MACs / its median time) / (2 * 2048^3 / the probe's median time). MACs are
counted by ``segkit.complexity.count_macs`` (convs, linears, matrix products).
"""

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import paddle  # noqa: E402

from segkit.complexity import count_macs  # noqa: E402
from segkit.engine.backends import RuntimeOptions, create_backend  # noqa: E402
from segkit.engine.export import export_model  # noqa: E402
from segkit.engine.onnx_export import convert_to_onnx  # noqa: E402
import segkit.models  # noqa: E402,F401  (registers the models)
from segkit.registry import MODELS  # noqa: E402

ROWS = {  # name -> (segkit variant, H, W)
    "segformer_b0": ("segformer_b0", 512, 512),
    "rtformer_slim": ("rtformer_slim", 512, 1024),
    "rtformer_slim_2048": ("rtformer_slim", 1024, 2048),
    "segnext_t": ("segnext_t", 512, 512),
    "hrvit_b1": ("hrvit_b1", 512, 512),
}
ORACLE_PYTHON = "/work/oracle-venv/bin/python"
HF_SCRIPT = r"""
import json, sys, time, torch
from transformers import SegformerConfig, SegformerForSemanticSegmentation
torch.set_num_threads(int(sys.argv[3]))
config = SegformerConfig(num_labels=19, hidden_sizes=[32, 64, 160, 256], decoder_hidden_size=256, depths=[2, 2, 2, 2])
model = SegformerForSemanticSegmentation(config).eval()
x = torch.randn(1, 3, int(sys.argv[1]), int(sys.argv[2]))
times = []
with torch.inference_mode():
    for i in range(2 + int(sys.argv[4])):
        start = time.perf_counter(); model(pixel_values=x); times.append(time.perf_counter() - start)
print(json.dumps(times[2:]))
"""


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


def columns_for(variant: str, height: int, width: int, workdir: str):
    """name -> zero-argument callable running one batch-1 inference, for every column that runs here."""
    paddle.seed(0)
    model = MODELS.get(variant)(num_classes=19)
    model.eval()
    x = np.random.default_rng(0).normal(size=(1, 3, height, width)).astype("float32")
    tensor = paddle.to_tensor(x)
    save_dir = os.path.join(workdir, variant)
    if not os.path.isdir(save_dir):
        export_model(model, save_dir, output_op="none")
        convert_to_onnx(save_dir, simplify=False)
    runs = {}

    def run_dygraph():
        with paddle.no_grad():
            return model(tensor)
    runs["segkit dygraph"] = run_dygraph
    paddle_backend = create_backend(save_dir, RuntimeOptions("paddle"))
    runs[f"segkit Paddle Inference ({paddle_backend.mode})"] = lambda: paddle_backend.run(x)
    ort_backend = create_backend(save_dir, RuntimeOptions("onnxruntime"))
    runs["segkit ONNX Runtime"] = lambda: ort_backend.run(x)
    if importlib.util.find_spec("openvino"):
        ov_backend = create_backend(save_dir, RuntimeOptions("openvino"))
        runs["segkit OpenVINO"] = lambda: ov_backend.run(x)
    peer = paddleseg_model(variant)
    if peer is not None:
        peer.eval()

        def run_peer():
            with paddle.no_grad():
                return peer(tensor)
        runs["PaddleSeg 2.8 dygraph"] = run_peer
    return runs, count_macs(model, [1, 3, height, width]).total_macs


def hf_times(height: int, width: int, threads: int, rounds: int):
    """Per-round seconds of HuggingFace SegFormer-B0 in PyTorch (oracle venv), or None if it cannot run."""
    if not os.path.exists(ORACLE_PYTHON):
        return None
    result = subprocess.run([ORACLE_PYTHON, "-c", HF_SCRIPT, str(height), str(width), str(threads), str(rounds)],
                            capture_output=True, text=True, timeout=1800)
    return json.loads(result.stdout.strip().splitlines()[-1]) if result.returncode == 0 else None


def bench_row(name: str, rounds: int, threads: int, workdir: str):
    """Median seconds per column and the probe's median for one row."""
    variant, height, width = ROWS[name]
    runs, macs = columns_for(variant, height, width, workdir)
    for fn in runs.values():  # warm-up
        fn()
    times = {key: [] for key in runs}
    probes = []
    keys = list(runs)
    for r in range(rounds):
        probes.append(matmul_probe())
        for key in keys[r % len(keys):] + keys[:r % len(keys)]:
            start = time.perf_counter()
            runs[key]()
            times[key].append(time.perf_counter() - start)
    medians = {key: float(np.median(v)) for key, v in times.items()}
    if variant == "segformer_b0":
        hf = hf_times(height, width, threads, rounds)
        if hf:
            medians["HF transformers PyTorch"] = float(np.median(hf))
    return medians, float(np.median(probes)), macs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args(argv)
    paddle.set_flags({"FLAGS_use_mkldnn": False})
    paddle.framework.core.set_num_threads(args.threads)
    print(f"{args.threads} threads, {args.rounds} rounds per row, batch 1, fp32, random weights, 19 classes")
    print("| row | column | ms (median) | % of matmul peak | probe GFLOP/s |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as workdir:
        for name in args.rows:
            medians, probe, macs = bench_row(name, args.rounds, args.threads, workdir)
            peak = 2 * 2048 ** 3 / probe
            best = min(medians, key=medians.get)
            for key, seconds in medians.items():
                share = 2 * macs / seconds / peak
                mark = " (fastest)" if key == best else ""
                print(f"| {name} | {key}{mark} | {1e3 * seconds:.1f} | {100 * share:.1f}% | {peak / 1e9:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
