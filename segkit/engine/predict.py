"""Prediction on image files: pseudo-colour PNGs and overlays, keeping the inputs' relative paths."""

import os
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np
import paddle
from paddle import nn

from segkit.config import TestConfig
from segkit.engine.inference import infer_image
from segkit.errors import DatasetError
from segkit.logger import logger
from segkit.transforms import Compose, read_image
from segkit.visualize import overlay, pseudo_color

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def collect_images(image_path: str) -> Tuple[List[str], str]:
    """The images named by ``image_path`` (a file, a folder searched recursively, or a .txt list)
    and the folder their output paths are made relative to."""
    if os.path.isdir(image_path):
        found = sorted(
            os.path.join(root, name)
            for root, _, names in os.walk(image_path)
            for name in names
            if name.lower().endswith(IMAGE_EXTENSIONS)
        )
        if not found:
            raise DatasetError(f"--image_path {image_path}: the folder holds no images ({', '.join(IMAGE_EXTENSIONS)}).")
        return found, image_path
    if not os.path.isfile(image_path):
        raise DatasetError(f"--image_path {image_path}: no such file or folder.")
    if image_path.lower().endswith(".txt"):
        base = os.path.dirname(image_path)
        with open(image_path, encoding="utf-8") as f:
            entries = [line.split()[0] for line in f if line.strip()]
        paths = [p if os.path.isabs(p) or os.path.exists(p) else os.path.join(base, p) for p in entries]
        missing = [p for p in paths if not os.path.isfile(p)]
        if missing:
            raise DatasetError(f"--image_path {image_path}: {len(missing)} listed image(s) do not exist, e.g. {missing[0]}.")
        return paths, os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths])
    return [image_path], os.path.dirname(image_path)


def predict(
    model: nn.Layer,
    transforms: Compose,
    image_paths: Sequence[str],
    image_root: str,
    save_dir: str,
    palette: np.ndarray,
    test_config: Optional[TestConfig] = None,
) -> List[str]:
    """Predict every image; write ``pseudo_color_prediction/`` and ``added_prediction/`` under ``save_dir``.

    Returns:
        The paths of the pseudo-colour PNGs, in input order.
    """
    test_config = test_config or TestConfig()
    model.eval()
    written = []
    for i, path in enumerate(image_paths):
        data = transforms({"img": path, "trans_info": []})
        logits = infer_image(model, paddle.to_tensor(data["img"][None]), data["trans_info"], test_config)
        pred = paddle.argmax(logits, axis=1)[0].numpy().astype(np.uint8)
        rel = os.path.relpath(os.path.abspath(path), os.path.abspath(image_root))
        stem = os.path.splitext(rel)[0]
        colour_path = os.path.join(save_dir, "pseudo_color_prediction", stem + ".png")
        added_path = os.path.join(save_dir, "added_prediction", stem + ".jpg")
        os.makedirs(os.path.dirname(colour_path), exist_ok=True)
        os.makedirs(os.path.dirname(added_path), exist_ok=True)
        pseudo_color(pred, palette).save(colour_path)
        blended = overlay(read_image(path), pred, palette)
        cv2.imwrite(added_path, cv2.cvtColor(blended, cv2.COLOR_RGB2BGR))
        written.append(colour_path)
        logger.info(f"[{i + 1}/{len(image_paths)}] {path} -> {colour_path}")
    return written
