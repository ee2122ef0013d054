"""SegNeXt-T / S speed: segkit against paddleseg 2.8 in the same process, with the same weights.

Measures, per model and input size, the eval forward latency and one training step (forward,
cross-entropy, backward, AdamW update) at batch 1, as the median over ``--repeats`` runs after
``--warmup`` runs. Both implementations run in one process with the same device and threads
(``--threads``, default every core, as segkit's tools use); each round times segkit, PaddleSeg and
a NumPy 2048^3 float32 matmul probe, and the table gives the median time ratio PaddleSeg / segkit
per round (> 1: segkit faster) and the probe's GFLOP/s (this CPU's usable peak during the row).
Run by hand:

    python benchmarks/bench_segnext.py                      # T and S at 512 and 1024
    python benchmarks/bench_segnext.py --models t --sizes 512 --repeats 5
"""

import argparse
import os
import statistics
import sys
import time
from typing import Callable, List

import numpy as np
import paddle
import paddle.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import segkit.models  # noqa: E402,F401  (registers the models)
from segkit import runtime  # noqa: E402
from segkit.registry import MODELS  # noqa: E402
from segkit.weights import load_weights  # noqa: E402

PROBE = np.random.default_rng(0).standard_normal((2048, 2048)).astype(np.float32)


def paddleseg_model(size: str, num_classes: int) -> paddle.nn.Layer:
    from paddleseg.models.backbones import mscan
    from paddleseg.models.segnext import SegNeXt

    head = {"channels": 256, "ham_channels": 256, "ham_kwargs": {"MD_R": 16}}
    return SegNeXt(getattr(mscan, f"MSCAN_{size.upper()}")(), head, num_classes)


def sync() -> None:
    """Wait for queued device work (a no-op on CPU, where Paddle runs synchronously)."""
    if not paddle.device.get_device().startswith("cpu"):
        paddle.device.synchronize()


def timed_pair(steps: List[Callable[[], None]], warmup: int, repeats: int) -> List[List[float]]:
    """Seconds of each step per round after ``warmup`` untimed calls, the probe's last.

    The steps and the probe run alternately, so a machine that slows down or speeds up during the
    run affects both implementations alike.
    """
    for _ in range(warmup):
        for step in steps:
            step()
    steps = list(steps) + [lambda: PROBE @ PROBE]
    times = [[] for _ in steps]
    for _ in range(repeats):
        for step, record in zip(steps, times):
            sync()
            start = time.perf_counter()
            step()
            sync()
            record.append(time.perf_counter() - start)
    return times


def summary(times: List[List[float]]) -> str:
    """'segkit ms | paddleseg ms | ratio per round, median (range)'."""
    ratios = [theirs / ours for ours, theirs in zip(times[0], times[1])]
    return (f"{statistics.median(times[0]) * 1e3:>9.0f}ms {statistics.median(times[1]) * 1e3:>12.0f}ms "
            f"{statistics.median(ratios):>5.2f}x ({min(ratios):.2f}-{max(ratios):.2f})")


def forward_step(model: paddle.nn.Layer, x: paddle.Tensor) -> Callable[[], None]:
    def step():
        with paddle.no_grad():
            model(x)

    return step


def train_step(model: paddle.nn.Layer, x: paddle.Tensor, label: paddle.Tensor) -> Callable[[], None]:
    opt = paddle.optimizer.AdamW(6e-5, parameters=model.parameters(), weight_decay=0.01)

    def step():
        out = model(x)
        loss = F.cross_entropy(out[0], label, axis=1, ignore_index=255)
        loss.backward()
        opt.step()
        opt.clear_grad()

    return step


def main(argv: List[str] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["t", "s"], choices=["t", "s"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[512, 1024])
    parser.add_argument("--num-classes", type=int, default=19)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="compute threads (default: every core)")
    args = parser.parse_args(argv)
    threads = runtime.set_threads(args.threads)

    print(f"device: {paddle.device.get_device()}, paddle {paddle.__version__}, {threads} threads, batch 1, "
          f"median of {args.repeats}, segkit, paddleseg and the probe alternating; ratio = paddleseg / segkit")
    header = (f"{'model':<10} {'input':>9} | {'fwd segkit':>11} {'fwd paddleseg':>14} {'ratio (range)':>18} | "
              f"{'train segkit':>11} {'train paddleseg':>14} {'ratio (range)':>18} | probe GFLOP/s")
    print(header)
    print("-" * len(header))
    for name in args.models:
        paddle.seed(0)
        ours = MODELS.get(f"segnext_{name}")(num_classes=args.num_classes)
        theirs = paddleseg_model(name, args.num_classes)
        load_weights(ours, {k: v.numpy() for k, v in theirs.state_dict().items()}, source="paddleseg")
        for side in args.sizes:
            x = paddle.randn([1, 3, side, side])
            label = paddle.randint(0, args.num_classes, [1, side, side])
            for model in (ours, theirs):
                model.eval()
            forward = timed_pair([forward_step(ours, x), forward_step(theirs, x)], args.warmup, args.repeats)
            for model in (ours, theirs):
                model.train()
            train = timed_pair([train_step(ours, x, label), train_step(theirs, x, label)], args.warmup, args.repeats)
            probe = 2 * 2048 ** 3 / statistics.median(forward[2] + train[2]) / 1e9
            print(f"SegNeXt-{name.upper():<2} {side:>4}x{side:<4} | {summary(forward)} | {summary(train)} | {probe:.0f}",
                  flush=True)


if __name__ == "__main__":
    main()
