"""Peak memory and time of full-resolution evaluation: whole image vs sliding window.

Evaluates generated 2048x1024 images (19 classes, Cityscapes-sized) with RTFormer-Slim and
SegFormer-B0 (random weights: memory and time do not depend on the values) through
``segkit.engine.evaluate.evaluate``, exactly as ``tools/val.py`` does. Every configuration runs in
a fresh Python process, so each peak RSS (``ru_maxrss`` of that process) is its own; a reference
process does one forward pass at the window size, which is the floor that sliding-window
evaluation should stay close to.

Issue 7's checks, printed at the end:

* slide evaluation peak <= 1.5 x the peak of one forward pass at the crop size;
* whole-image evaluation peak does not grow with the number of images (compare runs with
  different counts, and within one run the peak after image 1 with the final peak).

Measured on the 2-core CPU (another job running; peak RSS in MiB, peak after image 1 in brackets), with
the tools' allocator setting (``--allocator reuse``) and the earlier one (``--allocator release``):

    model          allocator  forward 1024x1024   whole 2 / 5 images        slide 2 / 5 images
    rtformer_slim  reuse      602                 906 / 870 (854)           864 / 854 (825)   1.42x forward
    rtformer_slim  release    487                 598 / 598 (579)           705 / 705 (703)   1.45x forward
    segformer_b0   reuse      962                 2816 / 2853 (2661)        1332 / 1353 (1337) 1.41x forward
    segformer_b0   release    908                 2549 / 2551 (2534)        1134 / 1134 (1133) 1.25x forward

Usage (2 CPU cores: SegFormer-B0 takes ~15-25 s per 2048x1024 image whole, the 20-image runs ~25 min):

    python benchmarks/bench_eval_memory.py                      # 2 and 5 images, both models
    python benchmarks/bench_eval_memory.py --images 5 20 --models segformer_b0   # issue 7's check
    python benchmarks/bench_eval_memory.py --allocator release  # another glibc allocator setting
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from segkit.runtime import REUSE_KEEP, REUSE_LIMIT  # noqa: E402  (imports no Paddle)

ALLOCATOR_CHOICES = {"reuse": f"{REUSE_LIMIT >> 20} MiB mmap threshold, {REUSE_KEEP >> 30} GiB kept, as the tools",
                     "release": "fixed 128 KiB mmap threshold", "default": "glibc's adaptive thresholds"}

WIDTH, HEIGHT, NUM_CLASSES = 2048, 1024, 19
CROP, STRIDE = (1024, 1024), (768, 768)


def generate(root: str, count: int) -> str:
    """``count`` 2048x1024 images with blocky 19-class labels and a val list; returns the list path."""
    import cv2
    import numpy as np

    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    os.makedirs(os.path.join(root, "labels"), exist_ok=True)
    rng = np.random.default_rng(0)
    lines = []
    for i in range(count):
        blocks = rng.integers(0, NUM_CLASSES, (HEIGHT // 128, WIDTH // 128)).astype(np.uint8)
        label = cv2.resize(blocks, (WIDTH, HEIGHT), interpolation=cv2.INTER_NEAREST)
        label[rng.random((HEIGHT, WIDTH)) < 0.02] = 255  # some ignored pixels, as in Cityscapes
        colours = rng.integers(0, 256, (NUM_CLASSES + 1, 3)).astype(np.uint8)
        image = colours[np.minimum(label, NUM_CLASSES)] + rng.integers(0, 20, (HEIGHT, WIDTH, 3)).astype(np.uint8)
        name = f"{i:04d}.png"
        cv2.imwrite(os.path.join(root, "images", name), image)
        cv2.imwrite(os.path.join(root, "labels", name), label)
        lines.append(f"images/{name} labels/{name}")
    path = os.path.join(root, f"val_{count}.txt")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def rss_mib() -> float:
    """Current resident set size of this process, MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child(args) -> None:
    """One configuration in this fresh process; prints one JSON line."""
    import paddle

    import segkit.models  # noqa: F401  (registers the models)
    from segkit.config import TestConfig
    from segkit.datasets.base import Dataset
    from segkit.datasets.cityscapes import CLASS_NAMES
    from segkit.engine.evaluate import evaluate
    from segkit.registry import MODELS
    from segkit.runtime import ALLOCATORS

    ALLOCATORS[args.allocator]()
    paddle.seed(0)
    model = MODELS.get(args.model)(num_classes=NUM_CLASSES)
    model.eval()
    base = rss_mib()
    per_image_peaks = []
    start = time.time()
    if args.mode == "forward":
        with paddle.no_grad():
            model(paddle.rand([1, 3, CROP[1], CROP[0]]))
        images = 1
    else:
        # Record the peak after each image, to see whether it moves after the first one.
        import segkit.engine.evaluate as evaluate_module

        class Meter(evaluate_module.ConfusionMeter):
            def update(self, pred, label):
                cm = super().update(pred, label)
                per_image_peaks.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
                return cm

        evaluate_module.ConfusionMeter = Meter
        dataset = Dataset(mode="val", dataset_root=args.root, transforms=[{"type": "Normalize"}],
                          num_classes=NUM_CLASSES, val_path=args.list, class_names=CLASS_NAMES)
        cfg = TestConfig(is_slide=True, crop_size=list(CROP), stride=list(STRIDE)) if args.mode == "slide" else TestConfig()
        result = evaluate(model, dataset, cfg, print_detail=False)
        images = result["num_images"]
    seconds = time.time() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"model": args.model, "mode": args.mode, "images": images, "seconds": seconds,
                      "peak_mib": peak, "base_mib": base,
                      "per_image_peaks": per_image_peaks}))


def run_child(model: str, mode: str, root: str, list_path: str, allocator: str) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "--model", model, "--mode", mode, "--root", root,
           "--list", list_path, "--allocator", allocator]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"{model} {mode} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["rtformer_slim", "segformer_b0"])
    parser.add_argument("--images", type=int, nargs="+", default=[2, 5], help="image counts to evaluate")
    parser.add_argument("--modes", nargs="+", default=["whole", "slide"], choices=["whole", "slide"])
    parser.add_argument("--allocator", choices=sorted(ALLOCATOR_CHOICES), default="reuse",
                        help="glibc allocator setting (segkit.runtime.ALLOCATORS): " + "; ".join(
                            f"{k}: {v}" for k, v in sorted(ALLOCATOR_CHOICES.items())))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--list", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    with tempfile.TemporaryDirectory() as root:
        lists = {n: generate(root, n) for n in sorted(set(args.images))}
        print(f"{WIDTH}x{HEIGHT} images, {NUM_CLASSES} classes; slide windows {CROP[0]}x{CROP[1]} stride "
              f"{STRIDE[0]}x{STRIDE[1]}; {os.cpu_count()} CPU cores; one fresh process per row; "
              f"allocator: {args.allocator} ({ALLOCATOR_CHOICES[args.allocator]})")
        header = (f"{'model':<14} {'mode':<22} {'images':>6} {'peak RSS MiB':>13} {'after image 1':>14} "
                  f"{'after build MiB':>16} {'s/image':>8}")
        print(header + "\n" + "-" * len(header))
        rows = []
        for model in args.models:
            reference = run_child(model, "forward", root, lists[min(lists)], args.allocator)
            rows.append(reference)
            print(f"{model:<14} {'forward ' + f'{CROP[0]}x{CROP[1]}':<22} {1:>6} {reference['peak_mib']:>13.0f} {'':>14} "
                  f"{reference['base_mib']:>16.0f} {reference['seconds']:>8.1f}", flush=True)
            for mode in args.modes:
                for n in sorted(lists):
                    row = run_child(model, mode, root, lists[n], args.allocator)
                    rows.append(row)
                    print(f"{model:<14} {mode + ' eval':<22} {n:>6} {row['peak_mib']:>13.0f} "
                          f"{row['per_image_peaks'][0]:>14.0f} {row['base_mib']:>16.0f} "
                          f"{row['seconds'] / n:>8.1f}", flush=True)
        print("\nChecks (issue 7):")
        for model in args.models:
            mine = [r for r in rows if r["model"] == model]
            forward = next(r for r in mine if r["mode"] == "forward")["peak_mib"]
            for mode in args.modes:
                peaks = {r["images"]: r["peak_mib"] for r in mine if r["mode"] == mode}
                most = max(peaks)
                line = f"  {model} {mode}: peak with {most} images = {peaks[most]:.0f} MiB"
                if mode == "slide":
                    ratio = peaks[most] / forward
                    line += f" = {ratio:.2f} x one {CROP[0]}x{CROP[1]} forward ({forward:.0f} MiB) -> {'OK' if ratio <= 1.5 else 'OVER'} (target <= 1.5)"
                first = [r["per_image_peaks"][0] for r in mine if r["mode"] == mode and r["images"] == most][0]
                line += f"; peak after image 1 of that run = {first:.0f} MiB"
                if len(peaks) > 1:
                    least = min(peaks)
                    growth = peaks[most] / peaks[least]
                    line += f"; vs {least} images {peaks[least]:.0f} MiB (x{growth:.3f})"
                print(line)


if __name__ == "__main__":
    main()
