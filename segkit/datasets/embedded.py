"""A small synthetic scene dataset, generated deterministically the first time a config needs it.

Scenes have a sky above a horizon, textured ground, and objects of four kinds drawn in random order
so that they occlude each other: discs, boxes, triangles and thin poles. Colours of different kinds
overlap, so a model must use texture and shape as well as colour; Gaussian noise, random lighting
and blur make it learnable but not trivial. The files are written in the generic file-list layout
(``images/<split>/*.png``, ``labels/<split>/*.png``, ``train.txt``, ``val.txt``) and read by the
same ``Dataset`` and transform code as real data.
"""

import os
from typing import List, Optional, Tuple

import cv2
import numpy as np

from segkit.datasets.base import Dataset, Transforms
from segkit.errors import DatasetError
from segkit.registry import DATASETS

SCENE_CLASSES = ["ground", "sky", "disc", "box", "triangle", "pole"]
SCENE_PALETTE = [[128, 100, 64], [70, 130, 180], [220, 20, 60], [250, 170, 30], [153, 50, 204], [0, 200, 120]]
SPLITS = {"train": (300, 0), "val": (60, 100_000)}  # images per split, seed offset
IMAGE_SIZE = (160, 160)  # height, width
DONE_MARKER = ".complete"


def _texture(rng: np.random.Generator, h: int, w: int, kind: str) -> np.ndarray:
    """A [h, w] texture in [-1, 1]: 'stripes', 'checker', 'dots' or 'smooth' noise."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == "stripes":
        angle = rng.uniform(0, np.pi)
        period = rng.uniform(5, 9)
        return np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period)
    if kind == "checker":
        cell = int(rng.integers(4, 8))
        return ((xx // cell + yy // cell) % 2) * 2.0 - 1.0
    if kind == "dots":
        period = rng.uniform(6, 9)
        return np.cos(xx * 2 * np.pi / period) * np.cos(yy * 2 * np.pi / period)
    small = rng.normal(0, 1, (h // 8 + 1, w // 8 + 1)).astype(np.float32)
    return np.clip(cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC), -1, 1)


def _hsv_colour(rng: np.random.Generator, hue_range: Tuple[float, float], sat=(120, 230), val=(120, 230)) -> np.ndarray:
    hsv = np.uint8([[[rng.uniform(*hue_range), rng.uniform(*sat), rng.uniform(*val)]]])
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def _object_mask(rng: np.random.Generator, kind: int, h: int, w: int) -> np.ndarray:
    """A uint8 mask of one object of class ``kind`` at a random place."""
    mask = np.zeros((h, w), np.uint8)
    cx, cy = int(rng.integers(0, w)), int(rng.integers(h // 4, h))
    size = int(rng.integers(min(h, w) // 10, min(h, w) // 4))
    if kind == 2:  # disc
        cv2.ellipse(mask, (cx, cy), (size, int(size * rng.uniform(0.7, 1.0))), 0, 0, 360, 1, -1)
    elif kind == 3:  # box, slightly rotated
        rect = ((cx, cy), (size * 2 * rng.uniform(0.7, 1.3), size * 2 * rng.uniform(0.6, 1.2)), rng.uniform(-20, 20))
        cv2.fillPoly(mask, [cv2.boxPoints(rect).astype(np.int32)], 1)
    elif kind == 4:  # triangle
        angles = rng.uniform(0, 2 * np.pi) + np.array([0, 2.1, 4.2]) + rng.uniform(-0.3, 0.3, 3)
        pts = np.stack([cx + 1.3 * size * np.cos(angles), cy + 1.3 * size * np.sin(angles)], 1)
        cv2.fillPoly(mask, [pts.astype(np.int32)], 1)
    else:  # pole: a thin, tall bar from the ground up
        thickness = int(rng.integers(3, 7))
        top = int(rng.integers(0, h // 2))
        cv2.rectangle(mask, (cx, top), (cx + thickness, cy + size), 1, -1)
    return mask.astype(bool)


# Per class: hue range (OpenCV 0-180), texture. Boxes and triangles share hues; discs and poles overlap too.
OBJECT_STYLE = {2: ((0, 25), "dots"), 3: ((15, 45), "stripes"), 4: ((20, 50), "checker"), 5: ((0, 30), "smooth")}


def make_scene(seed: int, size: Tuple[int, int] = IMAGE_SIZE) -> Tuple[np.ndarray, np.ndarray]:
    """One synthetic scene: an RGB uint8 image and its uint8 label, both of ``size`` (h, w)."""
    rng = np.random.default_rng(seed)
    h, w = size
    image = np.zeros((h, w, 3), np.float32)
    label = np.zeros((h, w), np.uint8)
    horizon = int(rng.integers(h // 5, h // 2)) + (np.arange(w) * rng.uniform(-0.2, 0.2)).astype(int)
    sky = np.arange(h)[:, None] < horizon[None, :]
    gradient = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    sky_colour = _hsv_colour(rng, (95, 115), (60, 170), (150, 240))
    image[:] = sky_colour * (1.0 - 0.35 * gradient)
    ground = _hsv_colour(rng, (5, 40), (40, 140), (60, 170))
    ground_tex = _texture(rng, h, w, "smooth")[..., None]
    image[~sky] = (ground + 35 * ground_tex)[~sky]
    label[sky] = 1
    for _ in range(int(rng.integers(3, 8))):
        kind = int(rng.integers(2, 6))
        hue, texture = OBJECT_STYLE[kind]
        mask = _object_mask(rng, kind, h, w)
        colour = _hsv_colour(rng, hue)
        shade = 1.0 + 0.25 * _texture(rng, h, w, texture)[..., None]
        image[mask] = (colour * shade)[mask]
        label[mask] = kind
    image *= rng.uniform(0.7, 1.2)  # lighting
    image += rng.normal(0, 12, image.shape)
    image = cv2.GaussianBlur(np.clip(image, 0, 255), (3, 3), rng.uniform(0.3, 1.0))
    return image.astype(np.uint8), label


def generate(root: str, splits=SPLITS, size: Tuple[int, int] = IMAGE_SIZE) -> None:
    """Write the dataset into ``root`` unless a complete copy is already there.

    A marker file is written last, so an interrupted generation is redone from scratch.
    """
    if os.path.exists(os.path.join(root, DONE_MARKER)):
        return
    for split, (count, offset) in splits.items():
        os.makedirs(os.path.join(root, "images", split), exist_ok=True)
        os.makedirs(os.path.join(root, "labels", split), exist_ok=True)
        lines: List[str] = []
        for i in range(count):
            image, label = make_scene(offset + i, size)
            img_rel = f"images/{split}/{i:04d}.png"
            lbl_rel = f"labels/{split}/{i:04d}.png"
            cv2.imwrite(os.path.join(root, img_rel), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
            cv2.imwrite(os.path.join(root, lbl_rel), label)
            lines.append(f"{img_rel} {lbl_rel}")
        with open(os.path.join(root, f"{split}.txt"), "w") as f:
            f.write("\n".join(lines) + "\n")
    with open(os.path.join(root, DONE_MARKER), "w") as f:
        f.write("generated by segkit.datasets.embedded\n")


@DATASETS.register
class EmbeddedScenes(Dataset):
    """The embedded synthetic dataset (6 classes), generated into ``dataset_root`` on first use.

    Args:
        mode: 'train' or 'val'.
        transforms: the transform pipeline, as for ``Dataset``.
        dataset_root: where the files are (or will be) written.
    """

    NUM_CLASSES = len(SCENE_CLASSES)
    CLASS_NAMES = SCENE_CLASSES
    PALETTE = SCENE_PALETTE

    def __init__(self, mode: str, transforms: Transforms, dataset_root: str = "data/embedded_scenes"):
        if not dataset_root:
            raise DatasetError("EmbeddedScenes.dataset_root is empty; give the folder to generate the dataset into.")
        generate(dataset_root)
        super().__init__(
            mode=mode,
            dataset_root=dataset_root,
            transforms=transforms,
            num_classes=self.NUM_CLASSES,
            train_path=os.path.join(dataset_root, "train.txt"),
            val_path=os.path.join(dataset_root, "val.txt"),
        )
