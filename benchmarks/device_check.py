"""GPU readiness check: export every family, run it in every available runtime, compare with dygraph.

    python benchmarks/device_check.py [--families segformer rtformer segnext hrvit] [--size 512 512]

On a GPU machine (a CUDA build of Paddle): for SegFormer-B0, RTFormer-Slim, SegNeXt-T and HRViT-b1
(random weights, 19 classes) it exports the model (Paddle program + ONNX), runs Paddle Inference on
the GPU in fp32 and with TensorRT fp16, and ONNX Runtime's CUDA provider when onnxruntime-gpu is
installed; checks each output against the dygraph model on the CPU (argmax agreement, largest logit
difference); prints a latency table (median of 10 runs after 3 warm-ups); then runs a few fp16 and
bf16 training steps per family and checks that the losses are finite.

On a CPU-only machine it says so, runs the same export and comparisons on the CPU (Paddle Inference
with oneDNN, ONNX Runtime), skips the GPU-only rows, and exits 0: a dry run of everything it can.
Exit status 1 when an output disagrees with dygraph or a training loss is not finite.
"""

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import paddle  # noqa: E402

from segkit.engine.backends import RuntimeOptions, create_backend  # noqa: E402
from segkit.engine.export import export_model  # noqa: E402
from segkit.engine.onnx_export import convert_to_onnx  # noqa: E402
import segkit.models  # noqa: E402,F401  (registers the models)
from segkit.registry import MODELS  # noqa: E402

VARIANTS = {"segformer": "segformer_b0", "rtformer": "rtformer_slim", "segnext": "segnext_t", "hrvit": "hrvit_b1"}
NUM_CLASSES = 19
# An fp16 TensorRT engine reorders and rounds: accept a small share of flipped pixels there.
MIN_AGREEMENT = {"fp32": 0.999, "fp16": 0.98}


def gpu_available() -> bool:
    """A CUDA build of Paddle that sees at least one GPU."""
    return paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0


def runtimes(on_gpu: bool):
    """(name, RuntimeOptions, precision) rows to run; GPU rows only on a GPU machine."""
    rows = [("paddle-cpu", RuntimeOptions("paddle", "cpu"), "fp32"),
            ("onnxruntime-cpu", RuntimeOptions("onnxruntime", "cpu"), "fp32")]
    if on_gpu:
        rows += [("paddle-gpu fp32", RuntimeOptions("paddle", "gpu"), "fp32"),
                 ("paddle-gpu trt fp16", RuntimeOptions("paddle", "gpu", use_trt=True, precision="fp16"), "fp16"),
                 ("onnxruntime-gpu", RuntimeOptions("onnxruntime", "gpu"), "fp32")]
    return rows


def time_runs(backend, x: np.ndarray, warmup: int = 3, runs: int = 10) -> float:
    """Median seconds of ``runs`` calls after ``warmup``."""
    for _ in range(warmup):
        backend.run(x)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        backend.run(x)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def check_family(family: str, size, workdir: str, on_gpu: bool, rows: list) -> bool:
    """Export one family and compare every runtime with CPU dygraph; append table rows; True if all agree."""
    paddle.set_device("cpu")
    paddle.seed(0)
    model = MODELS.get(VARIANTS[family])(num_classes=NUM_CLASSES)
    model.eval()
    x = np.random.default_rng(0).normal(size=(1, 3) + tuple(size)).astype("float32")
    expected = model(paddle.to_tensor(x)).numpy()
    save_dir = os.path.join(workdir, family)
    export_model(model, save_dir, output_op="none")
    convert_to_onnx(save_dir, simplify=False)
    ok = True
    for name, options, precision in runtimes(on_gpu):
        try:
            shapes = {"min": [1, 3, 64, 64], "opt": [1, 3] + list(size), "max": [1, 3] + [2 * s for s in size]}
            options.trt_shapes = shapes
            backend = create_backend(save_dir, options)
            got = backend.run(x)
        except Exception as exc:  # a runtime that is not installed / not built: report and go on
            rows.append((VARIANTS[family], name, "n/a", "n/a", "n/a", f"{type(exc).__name__}: {str(exc)[:80]}"))
            continue
        agreement = float((got.argmax(1) == expected.argmax(1)).mean())
        diff = float(np.abs(got.astype(np.float32) - expected).max())
        good = agreement >= MIN_AGREEMENT[precision]
        ok &= good
        rows.append((VARIANTS[family], name, f"{1e3 * time_runs(backend, x):.1f}", f"{100 * agreement:.3f}",
                     f"{diff:.1e}", getattr(backend, "mode", "") + ("" if good else "  MISMATCH")))
    return ok


def training_steps(family: str, precision: str, steps: int = 3) -> str:
    """A few mixed-precision training steps on the GPU; the losses, or the reason they could not run."""
    paddle.set_device("gpu")
    paddle.seed(0)
    model = MODELS.get(VARIANTS[family])(num_classes=NUM_CLASSES)
    model.train()
    optimizer = paddle.optimizer.AdamW(1e-4, parameters=model.parameters())
    scaler = paddle.amp.GradScaler(init_loss_scaling=1024) if precision == "fp16" else None
    x = paddle.randn([2, 3, 256, 256])
    label = paddle.randint(0, NUM_CLASSES, [2, 256, 256])
    losses = []
    for _ in range(steps):
        with paddle.amp.auto_cast(level="O1", dtype="float16" if precision == "fp16" else "bfloat16"):
            out = model(x)
            logits = out[0] if isinstance(out, list) else out
            loss = paddle.nn.functional.cross_entropy(logits.astype("float32"), label, axis=1)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        optimizer.clear_grad()
        losses.append(float(loss))
    return " ".join(f"{v:.4f}" for v in losses) + ("" if np.all(np.isfinite(losses)) else "  NOT FINITE")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--size", type=int, nargs=2, default=[512, 512], metavar=("H", "W"))
    args = parser.parse_args(argv)
    on_gpu = gpu_available()
    print(f"device: {'GPU: ' + paddle.device.cuda.get_device_name() if on_gpu else 'no GPU (CPU-only Paddle build or no device)'}")
    if not on_gpu:
        print("dry run on the CPU: export, Paddle Inference (oneDNN) and ONNX Runtime against dygraph; "
              "GPU rows and fp16/bf16 training are skipped")
    rows, ok = [], True
    with tempfile.TemporaryDirectory() as workdir:
        for family in args.families:
            ok &= check_family(family, args.size, workdir, on_gpu, rows)
    print(f"\n| model | runtime | ms ({args.size[0]}x{args.size[1]}, batch 1) | argmax agreement % | max logit diff | mode |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    if on_gpu:
        print("\n| model | precision | losses of 3 training steps (256x256, batch 2) |")
        print("|---|---|---|")
        for family in args.families:
            for precision in ("fp16", "bf16"):
                try:
                    result = training_steps(family, precision)
                except Exception as exc:  # e.g. bf16 on a GPU without bf16 support
                    result = f"{type(exc).__name__}: {str(exc)[:80]}"
                ok &= "NOT FINITE" not in result
                print(f"| {VARIANTS[family]} | {precision} | {result} |")
    print("\nall outputs agree with dygraph" if ok else "\nMISMATCH: see the rows marked above")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
