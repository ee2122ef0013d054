"""Predict images with a trained model: python tools/predict.py --config ... --model_path ... --image_path ..."""

import argparse

import paddle
from _common import add_config_args, add_test_args, build_model_for_inference, run_cli, test_config_from_args

from segkit.config import load_config
from segkit.datasets.base import build_transforms, default_palette
from segkit.engine.predict import collect_images, predict
from segkit.registry import DATASETS
from segkit.transforms import Compose
from segkit.visualize import palette_array, parse_custom_color


def dataset_palette(cfg, num_classes: int):
    """The palette of the configured dataset (its ``palette`` key or class), else the default one."""
    section = cfg.data.get("val_dataset") or cfg.data.get("train_dataset") or {}
    if section.get("palette"):
        return section["palette"]
    fixed = getattr(DATASETS.get(section["type"]), "PALETTE", None) if section.get("type") in DATASETS else None
    return fixed or default_palette(num_classes)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    add_config_args(parser)
    add_test_args(parser, aug_flag="aug_pred")
    parser.add_argument("--image_path", required=True, help="an image, a folder of images, or a .txt list of images")
    parser.add_argument("--save_dir", default="output/result", help="where the predictions go")
    parser.add_argument("--custom_color", type=int, nargs="+", help="palette as r g b per class, e.g. 0 0 0 255 0 0")
    args = parser.parse_args(argv)
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
    predict(model, transforms, images, root, args.save_dir, palette_array(colours, num_classes), test_cfg)


if __name__ == "__main__":
    run_cli(main)
