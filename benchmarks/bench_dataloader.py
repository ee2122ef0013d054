"""Train-pipeline throughput on Cityscapes-sized images: segkit vs PaddleSeg, 0/1/2 workers.

Run by hand: python benchmarks/bench_dataloader.py [--batches 10] [--workers 0 1 2] [--no-model]

Generates a tiny Cityscapes layout of 2048x1024 PNG images and labels in a temporary folder,
runs the Cityscapes base-config train pipeline (ResizeStepScaling 0.5-2.0, RandomPaddingCrop
1024x512, flip, RandomDistort, Normalize) through paddle.io.DataLoader (batch 2) and prints
images/s for segkit and for the PaddleSeg 2.8 oracle side by side. It then times one
SegFormer-B0 training step at the same batch, to show whether loading is the bottleneck.
"""

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import paddle  # noqa: E402

import segkit.datasets  # noqa: E402,F401
from segkit.registry import DATASETS, build  # noqa: E402

TRAIN_TRANSFORMS = [
    {"type": "ResizeStepScaling", "min_scale_factor": 0.5, "max_scale_factor": 2.0, "scale_step_size": 0.25},
    {"type": "RandomPaddingCrop", "crop_size": [1024, 512]},
    {"type": "RandomHorizontalFlip"},
    {"type": "RandomDistort", "brightness_range": 0.4, "contrast_range": 0.4, "saturation_range": 0.4},
    {"type": "Normalize", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
]


def make_layout(root: str, count: int) -> None:
    """``count`` street-like 2048x1024 images (smooth gradients + blocks, PNG-compressible like photos)."""
    rng = np.random.default_rng(0)
    for i in range(count):
        city = "benchcity"
        stem = f"{city}_{i:06d}_000019"
        img_dir = os.path.join(root, "leftImg8bit", "train", city)
        gt_dir = os.path.join(root, "gtFine", "train", city)
        os.makedirs(img_dir, exist_ok=True)
        os.makedirs(gt_dir, exist_ok=True)
        blocks = rng.integers(0, 19, size=(16, 32)).astype(np.uint8)
        label = cv2.resize(blocks, (2048, 1024), interpolation=cv2.INTER_NEAREST)
        palette = rng.integers(0, 256, size=(19, 3)).astype(np.uint8)
        img = palette[label].astype(np.int16) + rng.integers(-12, 13, size=(1024, 2048, 1), dtype=np.int16)
        cv2.imwrite(os.path.join(img_dir, f"{stem}_leftImg8bit.png"), np.clip(img, 0, 255).astype(np.uint8))
        cv2.imwrite(os.path.join(gt_dir, f"{stem}_gtFine_labelTrainIds.png"), label)


def segkit_dataset(root: str):
    return build({"type": "Cityscapes", "dataset_root": root, "mode": "train", "transforms": TRAIN_TRANSFORMS},
                 DATASETS, where="train_dataset")


def paddleseg_dataset(root: str):
    try:
        import paddleseg.transforms as T
        from paddleseg.datasets import Cityscapes
    except ImportError:
        return None
    transforms = [
        T.ResizeStepScaling(0.5, 2.0, 0.25),
        T.RandomPaddingCrop((1024, 512)),
        T.RandomHorizontalFlip(),
        T.RandomDistort(brightness_range=0.4, contrast_range=0.4, saturation_range=0.4),
        T.Normalize(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
    ]
    return Cityscapes(transforms=transforms, dataset_root=root, mode="train")


class OnlyImageLabel(paddle.io.Dataset):
    """PaddleSeg samples also carry trans_info / gt_fields lists, which do not collate; keep img and label."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        s = self.dataset[i]
        return s["img"], s["label"].astype("int64")


def images_per_second(dataset, workers: int, batches: int, batch_size: int = 2) -> float:
    loader = paddle.io.DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                                  drop_last=True, persistent_workers=False)
    if len(loader) < batches + 1:
        raise ValueError(f"need at least {(batches + 1) * batch_size} images for {batches} timed batches")
    it = iter(loader)
    next(it)  # worker start-up and first batch are not counted
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    elapsed = time.perf_counter() - start
    for _ in it:  # drain, so no worker is still reading when the folder is removed
        pass
    return batches * batch_size / elapsed


def segformer_step_seconds(batch_size: int = 2, steps: int = 2) -> float:
    import segkit.models  # noqa: F401
    from segkit.registry import MODELS

    model = build({"type": "segformer_b0", "num_classes": 19}, MODELS, where="model")
    model.train()
    opt = paddle.optimizer.AdamW(learning_rate=1e-4, parameters=model.parameters())
    x = paddle.randn([batch_size, 3, 512, 1024])
    y = paddle.randint(0, 19, [batch_size, 512, 1024])
    times = []
    for _ in range(steps + 1):
        t = time.perf_counter()
        logits = model(x)[0]
        loss = paddle.nn.functional.cross_entropy(logits.transpose([0, 2, 3, 1]), y.unsqueeze(-1))
        loss.backward()
        opt.step()
        opt.clear_grad()
        times.append(time.perf_counter() - t)
    return float(np.median(times[1:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=10, help="timed batches of 2 per setting")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--no-model", action="store_true", help="skip the SegFormer-B0 step timing")
    args = parser.parse_args()
    print(f"paddle {paddle.__version__}, {os.cpu_count()} CPU cores, batch 2, crop 1024x512 from 2048x1024 PNGs")
    with tempfile.TemporaryDirectory() as root:
        make_layout(root, 2 * args.batches + 2)
        ours, theirs = segkit_dataset(root), paddleseg_dataset(root)
        print(f"{'workers':>8} {'segkit img/s':>14} {'paddleseg img/s':>16}")
        for workers in args.workers:
            np.random.seed(0)
            a = images_per_second(ours, workers, args.batches)
            b = images_per_second(OnlyImageLabel(theirs), workers, args.batches) if theirs else float("nan")
            print(f"{workers:>8d} {a:>14.2f} {b:>16.2f}")
    if not args.no_model:
        step = segformer_step_seconds()
        print(f"SegFormer-B0 train step, batch 2 at 1024x512: {step:.2f} s = {2 / step:.2f} img/s")


if __name__ == "__main__":
    main()
