"""RTFormer-Slim / -Base speed: segkit vs paddleseg==2.8.0 side by side, in the same run.

Measures eval forward latency (batch 1, no grad) at 1024x512 and 2048x1024 and one training step
(forward, cross-entropy on main + 0.4 aux, backward, AdamW step) at 1024x512, median over
``--repeats`` after ``--warmup`` runs, on whatever device Paddle uses (GPU if available), with the
same compute threads for both (``--threads``, default every core, as segkit's tools use). The two
implementations and a NumPy 2048^3 float32 matmul probe alternate run by run, so a busy machine
slows both alike; the ratio column is the median over rounds of PaddleSeg's time / segkit's
(> 1: segkit faster), with its range.

    python benchmarks/bench_rtformer.py [--variants slim base] [--forward_sizes 1024x512 2048x1024]
        [--train_size 1024x512] [--train_batch 2] [--repeats 5] [--warmup 2] [--threads N]
"""

import argparse
import os
import statistics
import sys
import time
from typing import Callable, Dict, List, Tuple

import numpy as np
import paddle
import paddle.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from paddleseg.models.rtformer import RTFormer as PaddleSegRTFormer  # noqa: E402  (oracle)

from segkit import runtime  # noqa: E402
from segkit.models.rtformer import RTFormer  # noqa: E402

VARIANTS = {
    "slim": dict(base_channels=32, head_channels=64, use_injection=[True, True]),
    "base": dict(base_channels=64, head_channels=128, use_injection=[True, False]),
}
IMPLEMENTATIONS = {"segkit": RTFormer, "paddleseg": PaddleSegRTFormer}


def parse_size(text: str) -> Tuple[int, int]:
    """'1024x512' -> (width, height)."""
    width, height = text.lower().split("x")
    return int(width), int(height)


def sync() -> None:
    if paddle.device.is_compiled_with_cuda() and "gpu" in paddle.get_device():
        paddle.device.synchronize()


PROBE = np.random.default_rng(0).standard_normal((2048, 2048)).astype(np.float32)


def interleaved_ms(steps: Dict[str, Callable[[], None]], warmup: int, repeats: int) -> Dict[str, List[float]]:
    """Wall times (ms) of each step and of the matmul probe per round; they alternate so machine load
    hits them alike."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    sync()
    steps = dict(steps, probe=lambda: PROBE @ PROBE)
    times = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            sync()
            times[name].append((time.perf_counter() - start) * 1000)
    return times


def forward_step(model: paddle.nn.Layer, size: Tuple[int, int]) -> Callable[[], None]:
    """Batch-1 eval forward without gradients."""
    model.eval()
    x = paddle.randn([1, 3, size[1], size[0]])

    def step():
        with paddle.no_grad():
            model(x)

    return step


def train_step(model: paddle.nn.Layer, size: Tuple[int, int], batch: int) -> Callable[[], None]:
    """Forward, cross-entropy on main + 0.4 aux, backward, AdamW step."""
    model.train()
    optimizer = paddle.optimizer.AdamW(4e-4, parameters=model.parameters(), weight_decay=0.0125)
    x = paddle.randn([batch, 3, size[1], size[0]])
    label = paddle.randint(0, 19, [batch, size[1], size[0]])

    def step():
        main, aux = model(x)
        loss = F.cross_entropy(main, label, axis=1, ignore_index=255) + 0.4 * F.cross_entropy(
            aux, label, axis=1, ignore_index=255)
        loss.backward()
        optimizer.step()
        optimizer.clear_grad()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--forward_sizes", nargs="*", default=["1024x512", "2048x1024"])
    parser.add_argument("--train_size", default="1024x512", help="'' to skip the training step")
    parser.add_argument("--train_batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="compute threads (default: every core)")
    args = parser.parse_args()
    threads = runtime.set_threads(args.threads)

    print(f"device: {paddle.get_device()}, paddle {paddle.__version__}, {threads} compute threads; "
          "ratio = paddleseg / segkit per round, median (range)")
    header = (f"{'variant':8} {'measurement':34} {'segkit ms':>10} {'paddleseg ms':>12} {'ratio (range)':>18} "
              f"{'probe GFLOP/s':>13}")
    print(header)
    print("-" * len(header))
    for variant in args.variants:
        kwargs = dict(VARIANTS[variant], num_classes=19, drop_path_rate=0.0)
        models = {}
        for impl, cls in IMPLEMENTATIONS.items():
            paddle.seed(0)
            models[impl] = cls(**kwargs)
        tasks = [(f"forward b1 {s}", lambda m, s=s: forward_step(m, parse_size(s))) for s in args.forward_sizes]
        if args.train_size:
            tasks.append((f"train step b{args.train_batch} {args.train_size}",
                          lambda m: train_step(m, parse_size(args.train_size), args.train_batch)))
        for name, make_step in tasks:
            steps = {impl: make_step(model) for impl, model in models.items()}
            times = interleaved_ms(steps, args.warmup, args.repeats)
            ratios = [theirs / ours for ours, theirs in zip(times["segkit"], times["paddleseg"])]
            probe = 2 * 2048 ** 3 / statistics.median(times["probe"]) / 1e6
            print(f"{variant:8} {name:34} {statistics.median(times['segkit']):10.1f} "
                  f"{statistics.median(times['paddleseg']):12.1f} {statistics.median(ratios):5.2f}x "
                  f"({min(ratios):.2f}-{max(ratios):.2f}) {probe:13.0f}", flush=True)


if __name__ == "__main__":
    main()
