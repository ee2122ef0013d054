"""Predict images with a trained model: python tools/predict.py --config ... --model_path ... --image_path ..."""

import argparse

import paddle
from _common import (add_config_args, add_runtime_args, add_test_args, apply_runtime, build_model_for_inference, run_cli,
                     test_config_from_args)

from segkit.config import load_config
from segkit.datasets.base import build_transforms, default_palette
from segkit.engine.predict import collect_images, match_labels, predict
from segkit.registry import DATASETS
from segkit.runtime import return_large_buffers_to_os
from segkit.transforms import Compose
from segkit.visualize import palette_array, parse_custom_color


def dataset_palette(cfg, num_classes: int):
    """The palette of the configured dataset (its ``palette`` key or class), else the default one."""
    section = cfg.data.get("val_dataset") or cfg.data.get("train_dataset") or {}
    if section.get("palette"):
        return section["palette"]
    fixed = getattr(DATASETS.get(section["type"]), "PALETTE", None) if section.get("type") in DATASETS else None
    return fixed or default_palette(num_classes)


def dataset_class_names(cfg, num_classes: int):
    """Class names from the configured dataset (its ``class_names`` key or class), else ``class_i``."""
    section = cfg.data.get("val_dataset") or cfg.data.get("train_dataset") or {}
    names = section.get("class_names")
    if not names and section.get("type") in DATASETS:
        names = getattr(DATASETS.get(section["type"]), "CLASS_NAMES", None)
    if names and len(names) == num_classes:
        return list(names)
    return [f"class_{i}" for i in range(num_classes)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    add_config_args(parser)
    add_test_args(parser, aug_flag="aug_pred")
    parser.add_argument("--image_path", required=True, help="an image, a folder of images, or a .txt list of images")
    parser.add_argument("--save_dir", default="output/result", help="where the predictions go")
    parser.add_argument("--custom_color", type=int, nargs="+", help="palette as r g b per class, e.g. 0 0 0 255 0 0")
    parser.add_argument("--side_by_side", action="store_true",
                        help="also write side_by_side/<name>.png: image | prediction [| label] and a legend of the classes present")
    parser.add_argument("--label_path", help="with --side_by_side: a label file (one image) or a folder of labels "
                        "named like the images, in training ids")
    add_runtime_args(parser)
    args = parser.parse_args(argv)
    apply_runtime(args)
    return_large_buffers_to_os()  # full-resolution buffers: keep the peak flat over many images
    if args.label_path and not args.side_by_side:
        parser.error("--label_path is only used by --side_by_side; add --side_by_side or drop --label_path")
    cfg = load_config(args.config, args.opts)
    test_cfg = test_config_from_args(cfg, args)
    num_classes = cfg.num_classes()
    try:
        colours = parse_custom_color(args.custom_color, num_classes) or dataset_palette(cfg, num_classes)
    except ValueError as exc:
        parser.error(str(exc))
    section = cfg.require("val_dataset", "prediction (its transforms)")
    transforms = Compose(build_transforms(section.get("transforms", []), "val_dataset"))
    images, root = collect_images(args.image_path)
    model = build_model_for_inference(cfg, args.model_path)
    paddle.seed(args.seed)
    labels = match_labels(images, root, args.label_path) if args.label_path else None
    ignore_index = section.get("ignore_index", 255)
    predict(model, transforms, images, root, args.save_dir, palette_array(colours, num_classes), test_cfg,
            class_names=dataset_class_names(cfg, num_classes), side_by_side_pngs=args.side_by_side, labels=labels,
            ignore_index=ignore_index)


if __name__ == "__main__":
    run_cli(main)
