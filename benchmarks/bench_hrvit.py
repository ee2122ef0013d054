"""HRViT-b1 speed: forward latency and one training step at 512x512, printed as a table.

Rows, all measured in this run on this machine:
  * segkit HRViT-b1 + SegFormer head (150 classes), the model of the official ADE20K config;
  * segkit SegFormer-B1, a model of similar size and GMACs (15.9 vs 14.6) as a yardstick;
  * the HRViT-b1 backbone alone, in segkit and, with ``--official``, in the official PyTorch code
    (needs torch, einops and the official ``models/hrvit.py`` of facebookresearch/HRViT; no
    oracle is installed by default, so that row is skipped without it).

Usage:
    python benchmarks/bench_hrvit.py [--size 512] [--batch 1] [--train_batch 2] [--repeats 3]
        [--official path/to/HRViT/models/hrvit.py]

Latency is the median over ``--repeats`` timed runs after one warm-up run. A training step is
forward, cross-entropy (for the backbone rows: the mean of the outputs), backward and an AdamW
update.
"""

import argparse
import importlib.util
import os
import statistics
import sys
import time
from typing import Callable, List, Optional

import numpy as np
import paddle
import paddle.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import segkit.models  # noqa: E402,F401
from segkit import runtime  # noqa: E402
from segkit.registry import MODELS  # noqa: E402
from segkit.models import hrvit  # noqa: E402


def median_ms(fn: Callable[[], None], repeats: int) -> float:
    fn()  # warm-up: kernel selection, allocator
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def count(params) -> float:
    return sum(int(np.prod(p.shape)) for p in params) / 1e6


def bench_paddle(name: str, layer: paddle.nn.Layer, is_model: bool, args) -> List[str]:
    size = args.size
    x1 = paddle.rand([args.batch, 3, size, size])
    x2 = paddle.rand([args.train_batch, 3, size, size])
    labels = paddle.randint(0, 150, [args.train_batch, size, size])
    optimizer = paddle.optimizer.AdamW(6e-5, parameters=layer.parameters(), weight_decay=0.01)

    def forward():
        layer.eval()
        with paddle.no_grad():
            out = layer(x1)
        (out if is_model else out[0]).numpy()  # wait for the result

    def train_step():
        layer.train()
        out = layer(x2)
        loss = F.cross_entropy(out[0], labels, axis=1) if is_model else sum(o.mean() for o in out)
        loss.backward()
        optimizer.step()
        optimizer.clear_grad()
        float(loss)

    params = count(p for p in layer.parameters() if not p.stop_gradient)
    return [name, "paddle", f"{params:.2f}", f"{median_ms(forward, args.repeats):.0f}", f"{median_ms(train_step, args.repeats):.0f}"]


def bench_official(path: str, args) -> Optional[List[str]]:
    try:
        import torch
    except ImportError:
        print("official row skipped: PyTorch is not installed")
        return None
    spec = importlib.util.spec_from_file_location("hrvit_official", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except ImportError as exc:
        print(f"official row skipped: {path} needs {exc.name} ({exc})")
        return None
    torch.set_num_threads(args.threads)
    model = module.HRViT_b1_224()
    model.head = torch.nn.Identity()  # forward_features only: the ImageNet classifier is not used
    size = args.size
    x1 = torch.rand(args.batch, 3, size, size)
    x2 = torch.rand(args.train_batch, 3, size, size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=6e-5, weight_decay=0.01)

    def forward():
        model.eval()
        with torch.no_grad():
            model.forward_features(x1)

    def train_step():
        model.train()
        loss = sum(o.mean() for o in model.forward_features(x2))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        loss.item()

    params = sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6
    return ["HRViT-b1 backbone (official)", f"torch {torch.__version__}", f"{params:.2f}",
            f"{median_ms(forward, args.repeats):.0f}", f"{median_ms(train_step, args.repeats):.0f}"]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=1, help="batch of the forward-latency runs")
    parser.add_argument("--train_batch", type=int, default=2, help="batch of the training steps")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for Paddle and PyTorch (default: every core)")
    parser.add_argument("--official", default=None, help="path to the official HRViT models/hrvit.py")
    parser.add_argument("--no_segformer", action="store_true", help="skip the SegFormer-B1 yardstick")
    args = parser.parse_args(argv)
    args.threads = runtime.set_threads(args.threads)

    paddle.seed(0)
    rows = [bench_paddle("HRViT-b1 + SegFormer head (segkit)", MODELS.get("hrvit_b1")(num_classes=150), True, args)]
    if not args.no_segformer and "segformer_b1" in MODELS:
        rows.append(bench_paddle("SegFormer-B1 (segkit)", MODELS.get("segformer_b1")(num_classes=150), True, args))
    rows.append(bench_paddle("HRViT-b1 backbone (segkit)", hrvit.hrvit_b1_backbone(drop_path_rate=0.1), False, args))
    if args.official:
        row = bench_official(args.official, args)
        if row:
            rows.append(row)

    device = paddle.device.get_device()
    print(f"\n{args.size}x{args.size}, forward batch {args.batch}, train batch {args.train_batch}, "
          f"median of {args.repeats}, paddle {paddle.__version__} on {device}, {os.cpu_count()} CPUs")
    header = ["model", "framework", "params (M)", "forward (ms)", "train step (ms)"]
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    for row in [header, ["-" * w for w in widths]] + rows:
        print("| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths)) + " |")


if __name__ == "__main__":
    main()
