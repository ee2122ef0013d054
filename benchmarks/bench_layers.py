"""segkit's CPU layer rewrites against the Paddle operations they replace, alternated in one run.

Rows (forward + backward, float32, the compute threads of ``--threads``, default every core):
  * a convolution's bias add on a 2x256x128x128 map: ``x + b[1, C, 1, 1]`` (``paddle.nn.Conv2D``)
    against ``segkit.models.layers.add_channel_bias`` (``[N, C, H*W] + [C, 1]``, the bias gradient a
    matrix product);
  * a linear layer on SegFormer-B0's first-stage tokens (2x16384x32 -> 128, MixFFN's fc1):
    ``paddle.nn.Linear`` against ``segkit.models.layers.Linear`` (the bias gradient a matrix product);
  * channel dropout (p 0.1) on SegFormer's 2x256x128x128 decoder map: ``paddle.nn.Dropout2D``
    against ``segkit.models.layers.Dropout2D``;
  * oneDNN's softmax, GELU, LayerNorm and cross-entropy (``segkit.ops``) against Paddle's kernels, on
    SegFormer-B0's first-stage shapes (train batch 2): ``paddle.nn.LayerNorm`` / ``GELU`` against
    ``segkit.models.layers.LayerNorm`` / ``GELU``, ``F.softmax`` over the last axis of the attention
    weights against ``layers.softmax``, and ``CrossEntropyLoss`` on 150-class 512x512 logits on Paddle's
    kernel (``paddle_kernels()``) against oneDNN's;
  * bilinear resizes: ``F.interpolate`` against ``segkit.models.layers.resize_bilinear`` (segkit's
    two-pass operator), for RTFormer's 8x logits upsampling (19x64x128 -> 512x1024), a decoder resize
    (256x16x16 -> 128x128) and the training loss's 4x upsampling of SegFormer-B0's 150-class logits
    (batch 2, 128x128 -> 512x512);
  * convolutions: ``F.conv2d`` (Paddle's CPU kernel) against ``segkit.models.layers.conv2d_nchw``
    (oneDNN, ``segkit.ops``) for the families' shapes: depth-wise 7x7 (HRViT), 5x5 and 1x21 / 21x1
    strips (SegNeXt), 3x3 (SegFormer's MixFFN), dense 3x3 (RTFormer), SegFormer's 7x7 stride-4 patch
    embedding, and a 1x1 (which stays on Paddle's kernel, as the check).
Each round times both and a NumPy 2048^3 float32 matmul probe; the table gives medians, the time
ratio Paddle / segkit per round (> 1: segkit faster) and the probe's GFLOP/s.

Usage: python benchmarks/bench_layers.py [--rounds 5] [--threads N] [--only TEXT]
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
from segkit.losses import CrossEntropyLoss  # noqa: E402
from segkit.models.layers import (GELU, Dropout2D, LayerNorm, Linear, add_channel_bias, conv2d_nchw,  # noqa: E402
                                  paddle_kernels, resize_bilinear, softmax)

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
    yield from layer_rows()
    yield from onednn_rows()
    resizes = (([1, 19, 64, 128], [512, 1024]), ([1, 256, 16, 16], [128, 128]), ([2, 150, 128, 128], [512, 512]))
    for shape, size in resizes:
        name = f"bilinear {'x'.join(map(str, shape[1:]))} -> {size[0]}x{size[1]}"
        kernel = lambda t, _, s=size: F.interpolate(t, size=s, mode="bilinear")  # noqa: E731
        products = lambda t, _, s=size: resize_bilinear(t, s)  # noqa: E731
        x = paddle.randn(shape)
        yield name, forward_backward(kernel, x, None), forward_backward(products, x, None)
    yield from conv_rows()


def layer_rows():
    """(name, Paddle's layer step, segkit's layer step) for the layers segkit subclasses."""
    pairs = (
        ("linear 2x16384x32 -> 128", [2, 16384, 32], paddle.nn.Linear, Linear, (32, 128)),
        ("dropout2d p 0.1, 2x256x128x128", [2, 256, 128, 128], paddle.nn.Dropout2D, Dropout2D, (0.1,)),
        ("layernorm 2x16384x32", [2, 16384, 32], paddle.nn.LayerNorm, LayerNorm, (32,)),
        ("gelu 2x16384x128", [2, 16384, 128], paddle.nn.GELU, GELU, ()),
    )
    for name, shape, theirs, ours, args in pairs:
        paddle.seed(0)
        plain = theirs(*args)
        paddle.seed(0)
        segkit = ours(*args)
        x = paddle.randn(shape)
        yield name, forward_backward(lambda t, _, f=plain: f(t), x, None), forward_backward(lambda t, _, f=segkit: f(t), x, None)


def onednn_rows():
    """(name, Paddle's step, segkit's oneDNN step) for the attention softmax and the cross-entropy."""
    scores = paddle.randn([2, 1, 16384, 256])
    yield ("softmax 2x1x16384x256 (last axis)", forward_backward(lambda t, _: F.softmax(t, axis=-1), scores, None),
           forward_backward(lambda t, _: softmax(t), scores, None))
    criterion = CrossEntropyLoss()

    def on_paddles_kernel(logits, label):
        with paddle_kernels():
            return criterion(logits, label)

    logits, label = paddle.randn([2, 150, 512, 512]), paddle.randint(0, 150, [2, 512, 512])
    yield ("cross-entropy 2x150x512x512", forward_backward(on_paddles_kernel, logits, label),
           forward_backward(criterion, logits, label))


CONVS = [  # name, input shape, weight shape, stride, padding, groups
    ("depth-wise 7x7 64x128x128", [1, 64, 128, 128], [64, 1, 7, 7], 1, 3, 64),
    ("depth-wise 5x5 32x128x128", [1, 32, 128, 128], [32, 1, 5, 5], 1, 2, 32),
    ("depth-wise 1x21 32x128x128", [1, 32, 128, 128], [32, 1, 1, 21], 1, [0, 10], 32),
    ("depth-wise 21x1 32x128x128", [1, 32, 128, 128], [32, 1, 21, 1], 1, [10, 0], 32),
    ("depth-wise 3x3 128x128x128", [1, 128, 128, 128], [128, 1, 3, 3], 1, 1, 128),
    ("3x3 64 -> 64, 2x64x128x256", [2, 64, 128, 256], [64, 64, 3, 3], 1, 1, 1),
    ("7x7 stride 4, 3 -> 32, 512x512", [1, 3, 512, 512], [32, 3, 7, 7], 4, 3, 1),
    ("1x1 256 -> 256, 128x128 (Paddle's kernel both)", [1, 256, 128, 128], [256, 256, 1, 1], 1, 0, 1),
]


def conv_rows():
    """(name, F.conv2d step, conv2d_nchw step) per convolution shape, with a bias."""
    for name, shape, weight_shape, stride, padding, groups in CONVS:
        weight = paddle.randn(weight_shape) * 0.1
        bias = paddle.randn(weight_shape[:1])
        for p in (weight, bias):
            p.stop_gradient = False

        def paddles(x, _, w=weight, b=bias, s=stride, p=padding, g=groups):
            return F.conv2d(x, w, b, stride=s, padding=p, groups=g)

        def segkits(x, _, w=weight, b=bias, s=stride, p=padding, g=groups):
            return conv2d_nchw(x, w, b, stride=s, padding=p, groups=g)

        x = paddle.randn(shape)
        yield f"conv {name}", forward_backward(paddles, x, None), forward_backward(segkits, x, None)


def timed(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv: List[str] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="compute threads (default: every core)")
    parser.add_argument("--only", default="", help="run only the rows whose name contains this text")
    args = parser.parse_args(argv)
    threads = runtime.set_threads(args.threads)
    print(f"{threads} threads, {args.rounds} alternated rounds, forward + backward, paddle {paddle.__version__}")
    print("| operation | Paddle (ms) | segkit (ms) | Paddle / segkit per round, median (range) | probe GFLOP/s |")
    print("|---|---|---|---|---|")
    for name, theirs, ours in rows():
        if args.only not in name:
            continue
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
