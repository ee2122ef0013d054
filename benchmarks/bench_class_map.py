"""Class maps: full upsample + argmax vs segkit's exact fast path (``segkit.engine.class_map``).

For each setting, every round times, alternating:
  * ``full``: the model's final bilinear resize of all K classes to the input size, the resize back
    to the original size, argmax (what evaluation did before);
  * ``fast``: ``exact_class_map`` on the same head-resolution logits (same result, checked);
  * a numpy 2048^3 float32 matmul probe, so the figures can be read as a share of this CPU's peak.
The logits are those of a trained model on a scene (a few classes present, each leading its own
region, absent classes clearly lower, noise on all), generated at the head's resolution (stride 4,
as SegFormer and HRViT): random-weight models score every class alike, which trained models do not.
Also printed: the SegFormer-B0 forward at that input size, for scale.

Usage: python benchmarks/bench_class_map.py [--rounds 7] [--threads N]
"""

import argparse
import statistics
import time

import numpy as np
import paddle
import paddle.nn.functional as F

import segkit.models  # noqa: F401  (registers the models)
from segkit import runtime
from segkit.engine.class_map import candidate_classes, exact_class_map, support_radius
from segkit.registry import MODELS
from segkit.transforms import reverse_transform

SETTINGS = [  # name, classes, input (h, w), original (h, w)
    ("ADE20K val (512x512 input, 512x683 image)", 150, (512, 512), (512, 683)),
    ("Cityscapes whole (1024x2048)", 19, (1024, 2048), (1024, 2048)),
    ("COCO-Stuff (512x512 input, 480x640 image)", 171, (512, 512), (480, 640)),
]


def scene_logits(rng, num_classes, h, w):
    """Head-resolution logits of a plausible scene (see the module docstring)."""
    present = rng.choice(num_classes, size=8, replace=False)
    seeds = rng.uniform([0, 0], [h, w], size=(len(present), 2))
    yy, xx = np.mgrid[0:h, 0:w]
    owner = np.argmin([(yy - y) ** 2 + (xx - x) ** 2 for y, x in seeds], axis=0)
    logits = rng.normal(-4, 0.5, size=(num_classes, h, w)).astype(np.float32)
    logits[present] += 4
    logits[present[owner], yy, xx] += 4
    return paddle.to_tensor(logits[None])


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def matmul_probe(a):
    return timed(lambda: a @ a)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    threads = runtime.set_threads(args.threads)
    rng = np.random.default_rng(0)
    probe = rng.standard_normal((2048, 2048)).astype(np.float32)
    print(f"threads: {threads}; medians over {args.rounds} alternated rounds\n")
    print("| setting | classes resized | full resize + argmax (ms) | fast (ms) | speed-up | B0 forward (ms) | matmul probe (ms, GFLOP/s) |")
    print("|---|---|---|---|---|---|---|")
    model = MODELS.get("segformer_b0")(num_classes=19)
    model.eval()
    for name, classes, size, original in SETTINGS:
        logits = scene_logits(rng, classes, size[0] // 4, size[1] // 4)
        trans_info = [("resize", original)] if original != size else []
        stages = [("resize", size)] + ([("resize", original)] if trans_info else [])

        def finish(t, size=size, trans_info=trans_info):
            return reverse_transform(F.interpolate(t, size=size, mode="bilinear"), trans_info)

        full = lambda: paddle.argmax(finish(logits), axis=1)[0].numpy()  # noqa: E731
        fast = lambda: exact_class_map(logits, finish, stages)  # noqa: E731
        assert np.array_equal(full(), fast())
        image = paddle.randn([1, 3, *size])
        times = {"full": [], "fast": [], "probe": [], "forward": []}
        for _ in range(args.rounds):
            times["full"].append(timed(full)[0])
            times["fast"].append(timed(fast)[0])
            times["probe"].append(matmul_probe(probe))
        with paddle.no_grad():
            for _ in range(2):
                times["forward"].append(timed(lambda: model(image).numpy())[0])
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        spread = {k: (max(v) - min(v)) / statistics.median(v) for k, v in times.items() if k != "forward"}
        resized = candidate_classes(logits[0].numpy(), support_radius(logits.shape[-2:], stages)).size
        gflops = 2 * 2048 ** 3 / (med["probe"] / 1e3) / 1e9
        print(f"| {name} | {resized} of {classes} | {med['full']:.0f} | {med['fast']:.0f} | "
              f"{med['full'] / med['fast']:.1f}x | {med['forward']:.0f} | {med['probe']:.0f}, {gflops:.0f} |")
        print(f"  (max-min spread / median: full {spread['full']:.0%}, fast {spread['fast']:.0%}, "
              f"probe {spread['probe']:.0%})")


if __name__ == "__main__":
    main()
