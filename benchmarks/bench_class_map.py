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

With ``--exports``, a second table times the argmax output op of exported programs
(``tools/export.py --output_op argmax``) in each backend (Paddle Inference with oneDNN, ONNX Runtime,
OpenVINO), alternated per round: ``full`` the former graph (every class resized by 4, argmax),
``fast`` ``segkit.engine.class_map.exact_argmax`` (the same class map, checked). Rows: that output op
alone, fed head-resolution logits (a scene as above, or random logits where every class can win: the
worst case); then whole SegFormer-B0 programs (150 classes, 512x512) whose classifier bias favours 8
classes, a stand-in for a trained model's scores.

Usage: python benchmarks/bench_class_map.py [--rounds 7] [--threads N] [--exports]
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import paddle  # noqa: E402
import paddle.nn.functional as F  # noqa: E402

import segkit.models  # noqa: E402,F401  (registers the models)
from segkit import runtime  # noqa: E402
from segkit.engine.backends import RuntimeOptions, create_backend  # noqa: E402
from segkit.engine.class_map import (candidate_classes, candidate_ids, exact_argmax, exact_class_map,  # noqa: E402
                                     support_radius)
from segkit.engine.export import export_model, write_deploy_yaml  # noqa: E402
from segkit.engine.onnx_export import convert_to_onnx  # noqa: E402
from segkit.models.base import head_resolution  # noqa: E402
from segkit.registry import MODELS  # noqa: E402
from segkit.transforms import reverse_transform  # noqa: E402

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


class ArgmaxOutputOp(paddle.nn.Layer):
    """An export's argmax output op on head-resolution logits [N, K, h, w]: the model's final bilinear
    resize to (4h, 4w) and the argmax, with every class (``fast=False``) or by ``exact_argmax``. Its one
    weight (1.0) gives the program the parameters file every export has."""

    def __init__(self, fast: bool):
        super().__init__()
        self.fast = fast
        self.scale = self.create_parameter([1], default_initializer=paddle.nn.initializer.Constant(1.0))

    def forward(self, logits):
        logits = logits * self.scale
        size = [logits.shape[2] * 4, logits.shape[3] * 4]
        if self.fast:
            return exact_argmax(logits, size, False)
        full = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return paddle.argmax(full, axis=1, keepdim=True, dtype="int32")


def export_output_op(fast: bool, num_classes: int, folder: str) -> str:
    """Trace ``ArgmaxOutputOp(fast)`` (dynamic h, w) into ``folder`` with its ONNX model; return ``folder``."""
    spec = [paddle.static.InputSpec([1, num_classes, None, None], "float32", "x")]
    layer = ArgmaxOutputOp(fast)
    layer.eval()
    paddle.jit.save(paddle.jit.to_static(layer, input_spec=spec, full_graph=True), os.path.join(folder, "model"))
    write_deploy_yaml(folder, [1, num_classes, None, None], "argmax", [])
    convert_to_onnx(folder)
    return folder


EXPORT_SETTINGS = [  # classes, output (H, W), logits: a scene, or random (every class can win: the worst case)
    (150, (512, 512), "scene"), (171, (512, 512), "scene"), (19, (1024, 2048), "scene"), (150, (512, 512), "random"),
]


def time_backends(name: str, folders, x: np.ndarray, resized: str, probe, rounds: int) -> None:
    """One table row per backend: the full and the fast export (``folders[False]``, ``folders[True]``)
    run on ``x``, alternated per round with the matmul probe; their class maps must be equal."""
    for backend in ("paddle", "onnxruntime", "openvino"):
        runs = {fast: create_backend(folder, RuntimeOptions(backend)).run for fast, folder in folders.items()}
        assert np.array_equal(runs[True](x), runs[False](x))
        times = {False: [], True: [], "probe": []}
        for i in range(rounds):
            for fast in ((False, True) if i % 2 == 0 else (True, False)):
                times[fast].append(timed(lambda: runs[fast](x))[0])
            times["probe"].append(matmul_probe(probe))
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        print(f"| {name} | {backend} | {resized} | {med[False]:.0f} | {med[True]:.0f} | {med[False] / med[True]:.1f}x | "
              f"{med['probe']:.0f} |")


def scene_segformer(rng, num_classes: int):
    """SegFormer-B0 with random weights whose classifier bias favours 8 classes (+4, the others -4),
    so that, as in a trained model, most classes score clearly lower everywhere."""
    model = MODELS.get("segformer_b0")(num_classes=num_classes)
    bias = np.full(num_classes, -4.0, dtype=np.float32)
    bias[rng.choice(num_classes, size=8, replace=False)] = 4.0
    model.head.classifier.bias.set_value(bias)
    model.eval()
    return model


def bench_exports(rng, probe, rounds: int) -> None:
    """The second table (see the module docstring)."""
    print("\n| classes, output size, input | backend | classes resized | full exported argmax (ms) | fast (ms) | "
          "speed-up | matmul probe (ms) |")
    print("|---|---|---|---|---|---|---|")
    for classes, size, kind in EXPORT_SETTINGS:
        logits = scene_logits(rng, classes, size[0] // 4, size[1] // 4)
        if kind == "random":
            logits = paddle.randn(logits.shape)
        with tempfile.TemporaryDirectory() as tmp:
            folders = {fast: export_output_op(fast, classes, os.path.join(tmp, str(fast))) for fast in (False, True)}
            time_backends(f"{classes}, {size[0]}x{size[1]}, {kind} logits", folders, logits.numpy(),
                          f"{candidate_ids(logits).shape[0]} of {classes}", probe, rounds)
    model = scene_segformer(rng, 150)
    image = rng.normal(size=(1, 3, 512, 512)).astype(np.float32)
    with head_resolution(model), paddle.no_grad():
        resized = f"{candidate_ids(model(paddle.to_tensor(image))).shape[0]} of 150"
    with tempfile.TemporaryDirectory() as tmp:
        folders = {}
        for fast in (False, True):
            folders[fast] = os.path.join(tmp, str(fast))
            export_model(model, folders[fast], fast_argmax=fast)
            convert_to_onnx(folders[fast])
        time_backends("150, 512x512, whole SegFormer-B0 program", folders, image, resized, probe, rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--exports", action="store_true", help="also time the argmax output op of exported programs")
    args = parser.parse_args()
    threads = runtime.set_threads(args.threads)
    rng = np.random.default_rng(0)
    probe = rng.standard_normal((2048, 2048)).astype(np.float32)
    if args.exports:
        bench_exports(rng, probe, args.rounds)
        return
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
