"""Predict images with a trained model: python tools/predict.py --config ... --model_path ... --image_path ..."""

import argparse

from _common import (add_config_args, add_runtime_args, add_test_args, apply_runtime, build_model_for_inference, run_cli,
                     test_config_from_args)

from segkit.config import INFERENCE_SECTIONS, load_config
from segkit.engine.checkpoints import require_writable_folder
from segkit.engine.predict import PredictionWriter, collect_images, match_labels, predict
from segkit.models.base import seed_inference
from segkit.visualize import palette_array, parse_custom_color


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    add_config_args(parser)
    add_test_args(parser, aug_flag="aug_pred")
    add_runtime_args(parser)
    parser.add_argument("--image_path", required=True, help="an image, a folder of images, or a .txt list of images")
    parser.add_argument("--save_dir", default="output/result", help="where the predictions go")
    parser.add_argument("--custom_color", type=int, nargs="+", help="palette as r g b per class, e.g. 0 0 0 255 0 0")
    parser.add_argument("--side_by_side", action="store_true",
                        help="also write side_by_side/<name>.png: image | prediction [| label] and a legend of the classes present")
    parser.add_argument("--label_path", help="with --side_by_side: a label file (one image) or a folder of labels "
                        "named like the images, in training ids")
    parser.add_argument("--save_probabilities", action="store_true",
                        help="also write probabilities/<name>.npy: float16 [classes, H, W], each pixel's class probabilities")
    args = parser.parse_args(argv)
    if args.label_path and not args.side_by_side:
        parser.error("--label_path is only used by --side_by_side; add --side_by_side or drop --label_path")
    apply_runtime(args)
    require_writable_folder(args.save_dir)  # before the model is loaded
    cfg = load_config(args.config, args.opts, sections=INFERENCE_SECTIONS)
    test_cfg = test_config_from_args(cfg, args)
    num_classes = cfg.num_classes()
    try:
        colours = parse_custom_color(args.custom_color, num_classes) or cfg.palette()
    except ValueError as exc:
        parser.error(str(exc))
    transforms = cfg.build_transforms("val")
    images, root = collect_images(args.image_path)
    model = build_model_for_inference(cfg, args.model_path)
    seed_inference(model, args.seed)
    labels = match_labels(images, root, args.label_path) if args.label_path else None
    writer = PredictionWriter(args.save_dir, root, palette_array(colours, num_classes), cfg.class_names(),
                              side_by_side=args.side_by_side, labels=labels, ignore_index=cfg.ignore_index(),
                              save_probabilities=args.save_probabilities)
    predict(model, transforms, images, writer, test_cfg)


if __name__ == "__main__":
    run_cli(main)
