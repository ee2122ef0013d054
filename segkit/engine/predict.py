"""Prediction on image files: pseudo-colour PNGs and overlays, keeping the inputs' relative paths;
on request side-by-side PNGs (image, prediction, label) with a legend of the classes present, and
the class probabilities as float16 ``.npy`` files."""

import dataclasses
import os
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import paddle
from paddle import nn

from segkit.config import TestConfig
from segkit.engine.inference import classes_and_probabilities, predict_classes
from segkit.engine.memory import check_whole_image_fits
from segkit.errors import DatasetError
from segkit.logger import logger
from segkit.progress import track
from segkit.transforms import Compose, read_image, read_label
from segkit.visualize import comparison, overlay, pseudo_color

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


def match_labels(image_paths: Sequence[str], image_root: str, label_path: str) -> Dict[str, str]:
    """Labels for the images: ``label_path`` is one label file (for a single image) or a folder.

    In a folder, an image's label is the file with the same relative path without extension
    (``a/b.jpg`` -> ``a/b.png``), else the only file with the same stem anywhere under it.

    Returns:
        image path -> label path, for the images that have one.

    Raises:
        DatasetError: the path does not exist, a file is given for several images, a stem is
            ambiguous, or no image has a label.
    """
    if os.path.isfile(label_path):
        if len(image_paths) != 1:
            raise DatasetError(
                f"--label_path {label_path} is one file but {len(image_paths)} images are predicted; "
                "give a folder of labels named like the images."
            )
        return {image_paths[0]: label_path}
    if not os.path.isdir(label_path):
        raise DatasetError(f"--label_path {label_path}: no such file or folder.")
    by_rel, by_stem = {}, {}
    for root, _, names in os.walk(label_path):
        for name in names:
            if not name.lower().endswith(IMAGE_EXTENSIONS):
                continue
            full = os.path.join(root, name)
            by_rel[os.path.splitext(os.path.relpath(full, label_path))[0]] = full
            by_stem.setdefault(os.path.splitext(name)[0], []).append(full)
    found = {}
    for path in image_paths:
        rel = os.path.splitext(os.path.relpath(os.path.abspath(path), os.path.abspath(image_root)))[0]
        candidates = [by_rel[rel]] if rel in by_rel else by_stem.get(os.path.splitext(os.path.basename(path))[0], [])
        if len(candidates) > 1:
            raise DatasetError(f"--label_path {label_path}: {len(candidates)} labels match {path}: {candidates[:3]}.")
        if candidates:
            found[path] = candidates[0]
    if not found:
        raise DatasetError(
            f"--label_path {label_path}: no label matches any of the {len(image_paths)} images; labels must "
            "have the image's file name (any image extension), e.g. frankfurt_000000.jpg -> frankfurt_000000.png."
        )
    missing = len(image_paths) - len(found)
    if missing:
        logger.warning(f"--label_path {label_path}: {missing} of {len(image_paths)} images have no label; "
                       "their side-by-side shows image and prediction only.")
    return found


def write_side_by_side(
    path: str,
    image_rgb: np.ndarray,
    pred: np.ndarray,
    palette: np.ndarray,
    class_names: Sequence[str],
    label_path: Optional[str] = None,
    ignore_index: int = 255,
) -> None:
    """Write image | prediction [| label] with a legend of the classes present to ``path``."""
    label = None
    if label_path is not None:
        label = read_label(label_path)
        if label.ndim != 2 or label.shape != pred.shape:
            raise DatasetError(
                f"label {label_path}: shape {label.shape}, expected a single-channel label of the image's size {pred.shape}."
            )
        valid = label[label != ignore_index]
        if valid.size and (valid.min() < 0 or valid.max() >= len(class_names)):
            raise DatasetError(
                f"label {label_path}: values {np.unique(valid[valid >= len(class_names)])[:5].tolist()} are not class ids "
                f"in [0, {len(class_names)}) nor the ignore index {ignore_index}; give labels in training ids."
            )
    os.makedirs(os.path.dirname(path), exist_ok=True)
    comparison(image_rgb, pred, palette, class_names, label, ignore_index).save(path)


@dataclasses.dataclass
class Prediction:
    """One image's prediction: the class id of every pixel at the image's original size."""

    path: str
    label_map: np.ndarray  # [H, W] uint8 class ids
    num_classes: int
    probabilities: Optional[np.ndarray] = None  # [C, H, W] float16, when asked for


def predict_images(model: nn.Layer, transforms: Compose, image_paths: Sequence[str],
                   test_config: Optional[TestConfig] = None, probabilities: bool = False) -> Iterator[Prediction]:
    """Predict the images one at a time (the inference half of prediction: no files written).

    Args:
        model: the model; it is put in eval mode.
        transforms: the val transforms (resizes and paddings are undone on the logits).
        image_paths: images to predict.
        test_config: whole / slide / aug settings.
        probabilities: also return each image's class probabilities (float16).
    """
    test_config = test_config or TestConfig()
    model.eval()
    for path in image_paths:
        data = transforms({"img": path, "trans_info": []})
        check_whole_image_fits(model, data["img"].shape, path, test_config)
        image, probs = paddle.to_tensor(data["img"][None]), None
        if probabilities:
            pred, probs = classes_and_probabilities(model, image, data["trans_info"], test_config)
            probs = probs.numpy().astype(np.float16)
        else:
            pred = predict_classes(model, image, data["trans_info"], test_config)
        del data, image
        num_classes = getattr(model, "num_classes", None) or int(pred.max()) + 1
        pred = pred.astype(np.uint8)
        yield Prediction(path, pred, num_classes, probs)


class PredictionWriter:
    """Writes predictions under ``save_dir``, keeping the images' paths relative to ``image_root``:
    as PaddleSeg, ``pseudo_color_prediction/<stem>.png`` and ``added_prediction/<name>`` (the input's
    file name and format); on request ``side_by_side/<stem>.png`` (image | prediction [| label] +
    legend) and ``probabilities/<stem>.npy`` (float16 [C, H, W], each pixel's class probabilities).

    Args:
        save_dir: output folder.
        image_root: output paths keep the images' paths relative to this folder.
        palette: [256, 3] colour table.
        class_names: names for the legend of the side-by-side PNGs.
        side_by_side: also write the side-by-side PNGs.
        labels: image path -> label path (training ids) for the side-by-side PNGs.
        ignore_index: label value drawn black and left out of the legend.
        save_probabilities: also write the class probabilities.
    """

    def __init__(self, save_dir: str, image_root: str, palette: np.ndarray,
                 class_names: Optional[Sequence[str]] = None, side_by_side: bool = False,
                 labels: Optional[Dict[str, str]] = None, ignore_index: int = 255, save_probabilities: bool = False):
        if labels and not side_by_side:
            raise ValueError("PredictionWriter: labels are only used for side-by-side PNGs; set side_by_side=True")
        self.save_dir, self.image_root, self.palette = save_dir, image_root, palette
        self.class_names, self.side_by_side = class_names, side_by_side
        self.labels, self.ignore_index = labels or {}, ignore_index
        self.save_probabilities = save_probabilities

    def output_path(self, folder: str, image_path: str, extension: str) -> str:
        """``save_dir/folder/<image path relative to image_root, without extension><extension>``, its folder made."""
        rel = os.path.relpath(os.path.abspath(image_path), os.path.abspath(self.image_root))
        path = os.path.join(self.save_dir, folder, os.path.splitext(rel)[0] + extension)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return path

    def write(self, prediction: Prediction) -> str:
        """Write one prediction's files; returns the pseudo-colour PNG's path."""
        pred = prediction.label_map
        colour_path = self.output_path("pseudo_color_prediction", prediction.path, ".png")
        pseudo_color(pred, self.palette).save(colour_path)
        image_rgb = read_image(prediction.path)
        blended = overlay(image_rgb, pred, self.palette)
        cv2.imwrite(self.output_path("added_prediction", prediction.path, os.path.splitext(prediction.path)[1]),
                    cv2.cvtColor(blended, cv2.COLOR_RGB2BGR))
        if self.save_probabilities:
            np.save(self.output_path("probabilities", prediction.path, ".npy"), prediction.probabilities)
        if self.side_by_side:
            names = self.class_names or [f"class_{c}" for c in range(prediction.num_classes)]
            write_side_by_side(self.output_path("side_by_side", prediction.path, ".png"), image_rgb, pred,
                               self.palette, names, self.labels.get(prediction.path), self.ignore_index)
        return colour_path


def predict(model: nn.Layer, transforms: Compose, image_paths: Sequence[str], writer: PredictionWriter,
            test_config: Optional[TestConfig] = None) -> List[str]:
    """Predict every image and write its files with ``writer``; returns the pseudo-colour PNGs' paths."""
    predictions = predict_images(model, transforms, image_paths, test_config, writer.save_probabilities)
    written = [writer.write(p) for p in track(predictions, len(image_paths), "[PREDICT]", "img")]
    logger.info(f"{len(written)} predictions written to {os.path.abspath(writer.save_dir)}")
    return written
