"""segkit's CPU layer rewrites against the Paddle operations they replace, alternated in one run.

Rows (forward + backward, float32, the compute threads of ``--threads``, default every core):
  * a convolution's bias add on a 2x256x128x128 map: ``x + b[1, C, 1, 1]`` (``paddle.nn.Conv2D``)
    against ``segkit.models.layers.add_channel_bias`` (``[N, C, H*W] + [C, 1]``);
  * bilinear resizes: ``F.interpolate`` against ``segkit.models.layers.resize_bilinear`` (two
    matrix products), for RTFormer's 8x logits upsampling (19x64x128 -> 512x1024) and a decoder
    resize (256x16x16 -> 128x128).
Each round times both and a NumPy 2048^3 float32 matmul probe; the table gives medians, the time
ratio Paddle / segkit per round (> 1: segkit faster) and the probe's GFLOP/s.

Usage: python benchmarks/bench_layers.py [--rounds 5] [--threads N]
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

from segkit import runtime  # noqa: E402
from segkit.models.layers import add_channel_bias, resize_bilinear  # noqa: E402

PROBE = np.random.default_rng(0).standard_normal((2048, 2048)).astype(np.float32)


def forward_backward(fn: Callable[[paddle.Tensor, paddle.Tensor], paddle.Tensor], x: paddle.Tensor,
                     extra: paddle.Tensor) -> Callable[[], None]:
    """A step running ``fn(x, extra)`` and its backward with random output gradients."""
    x = x.detach()
    x.stop_gradient = False
    grad = paddle.randn(fn(x, extra).shape)

    def step():
        fn(x, extra).backward(grad)
        x.clear_gradient()

    return step


def rows():
    """(name, Paddle's step, segkit's step) for each row."""
    bias = paddle.randn([256])
    bias.stop_gradient = False
    plain_bias = lambda x, b: x + b.reshape([1, -1, 1, 1])  # noqa: E731  (what nn.Conv2D does)
    x = paddle.randn([2, 256, 128, 128])
    yield "bias add 2x256x128x128", forward_backward(plain_bias, x, bias), forward_backward(add_channel_bias, x, bias)
    for shape, size in (([1, 19, 64, 128], [512, 1024]), ([1, 256, 16, 16], [128, 128])):
        name = f"bilinear {'x'.join(map(str, shape[1:]))} -> {size[0]}x{size[1]}"
        kernel = lambda t, _, s=size: F.interpolate(t, size=s, mode="bilinear")  # noqa: E731
        products = lambda t, _, s=size: resize_bilinear(t, s)  # noqa: E731
        x = paddle.randn(shape)
        yield name, forward_backward(kernel, x, None), forward_backward(products, x, None)


def timed(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv: List[str] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="compute threads (default: every core)")
    args = parser.parse_args(argv)
    threads = runtime.set_threads(args.threads)
    print(f"{threads} threads, {args.rounds} alternated rounds, forward + backward, paddle {paddle.__version__}")
    print("| operation | Paddle (ms) | segkit (ms) | Paddle / segkit per round, median (range) | probe GFLOP/s |")
    print("|---|---|---|---|---|")
    for name, theirs, ours in rows():
        theirs(), ours()  # warm-up
        times = [[], [], []]
        for _ in range(args.rounds):
            for record, step in zip(times, (theirs, ours, lambda: PROBE @ PROBE)):
                record.append(timed(step))
        ratios = [t / o for t, o in zip(times[0], times[1])]
        print(f"| {name} | {statistics.median(times[0]) * 1e3:.1f} | {statistics.median(times[1]) * 1e3:.1f} | "
              f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f}) | "
              f"{2 * 2048 ** 3 / statistics.median(times[2]) / 1e9:.0f} |", flush=True)


if __name__ == "__main__":
    main()
