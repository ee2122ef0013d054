"""SegNeXt-T / S speed: segkit against paddleseg 2.8 in the same process, with the same weights.

Measures, per model and input size, the eval forward latency and one training step (forward,
cross-entropy, backward, AdamW update) at batch 1, as the median over ``--repeats`` runs after
``--warmup`` runs. Both implementations run the same device and thread settings. Run by hand:

    python benchmarks/bench_segnext.py                      # T and S at 512 and 1024
    python benchmarks/bench_segnext.py --sizes 512 --repeats 5
"""

import argparse
import statistics
import time
from typing import Callable, List

import paddle
import paddle.nn.functional as F

import segkit.models  # noqa: F401  (registers the models)
from segkit.weights import load_weights
from segkit.registry import MODELS


def paddleseg_model(size: str, num_classes: int) -> paddle.nn.Layer:
    from paddleseg.models.backbones import mscan
    from paddleseg.models.segnext import SegNeXt

    head = {"channels": 256, "ham_channels": 256, "ham_kwargs": {"MD_R": 16}}
    return SegNeXt(getattr(mscan, f"MSCAN_{size.upper()}")(), head, num_classes)


def sync() -> None:
    """Wait for queued device work (a no-op on CPU, where Paddle runs synchronously)."""
    if not paddle.device.get_device().startswith("cpu"):
        paddle.device.synchronize()


def timed_pair(steps: List[Callable[[], None]], warmup: int, repeats: int) -> List[float]:
    """Median seconds of each step after ``warmup`` untimed calls.

    The steps run alternately, so a machine that slows down or speeds up during the run affects
    both implementations alike.
    """
    for _ in range(warmup):
        for step in steps:
            step()
    times = [[] for _ in steps]
    for _ in range(repeats):
        for step, record in zip(steps, times):
            sync()
            start = time.perf_counter()
            step()
            sync()
            record.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


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
    args = parser.parse_args(argv)

    print(f"device: {paddle.device.get_device()}, paddle {paddle.__version__}, batch 1, median of {args.repeats}, segkit and paddleseg alternating")
    header = f"{'model':<10} {'input':>9} | {'fwd segkit':>11} {'fwd paddleseg':>14} | {'train segkit':>13} {'train paddleseg':>16}"
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
            row = timed_pair([forward_step(ours, x), forward_step(theirs, x)], args.warmup, args.repeats)
            for model in (ours, theirs):
                model.train()
            row += timed_pair([train_step(ours, x, label), train_step(theirs, x, label)], args.warmup, args.repeats)
            print(f"SegNeXt-{name.upper():<2} {side:>4}x{side:<4} | {row[0] * 1e3:>9.0f}ms {row[1] * 1e3:>12.0f}ms | "
                  f"{row[2] * 1e3:>11.0f}ms {row[3] * 1e3:>14.0f}ms")


if __name__ == "__main__":
    main()
