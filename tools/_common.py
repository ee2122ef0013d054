"""Argument helpers shared by the command-line tools."""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from segkit.errors import SegkitError  # noqa: E402


def add_config_args(parser: argparse.ArgumentParser) -> None:
    """``--config`` and ``--opts``, common to every tool."""
    parser.add_argument("--config", required=True, help="YAML config file")
    parser.add_argument("--opts", nargs="+", default=[], metavar="KEY=VALUE",
                        help="override config keys, e.g. --opts batch_size=4 model.backbone.type=MixVisionTransformer_B1")


def run_cli(main) -> None:
    """Run ``main()``; bad input (a SegkitError) prints one clear message and exits with status 2."""
    try:
        main()
    except SegkitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


def add_test_args(parser: argparse.ArgumentParser, aug_flag: str) -> None:
    """The inference flags of val.py and predict.py (sliding window, multi-scale, flips, seed)."""
    parser.add_argument("--model_path", required=True, help="model.pdparams, a checkpoint folder, a URL or a zip")
    parser.add_argument("--is_slide", action="store_true", help="sliding-window inference")
    parser.add_argument("--crop_size", type=int, nargs=2, metavar=("W", "H"), help="window size for --is_slide")
    parser.add_argument("--stride", type=int, nargs=2, metavar=("W", "H"), help="window step for --is_slide")
    parser.add_argument(f"--{aug_flag}", dest="aug_eval", action="store_true", help="multi-scale / flip augmentation")
    parser.add_argument("--scales", type=float, nargs="+", help=f"scales for --{aug_flag}")
    parser.add_argument("--flip_horizontal", action="store_true", help=f"add horizontal flips (with --{aug_flag})")
    parser.add_argument("--flip_vertical", action="store_true", help=f"add vertical flips (with --{aug_flag})")
    parser.add_argument("--seed", type=int, default=0, help="paddle.seed before the first image (models with random parts)")
    parser.add_argument("--num_workers", type=int, default=0, help="data-loading worker processes")


def test_config_from_args(cfg, args):
    """The config's test_config with the command-line flags applied on top."""
    import dataclasses

    from segkit.errors import ConfigError

    test_cfg = cfg.test_config()
    updates = {k: getattr(args, k) for k in ("crop_size", "stride", "scales") if getattr(args, k) is not None}
    for flag in ("is_slide", "aug_eval", "flip_horizontal", "flip_vertical"):
        if getattr(args, flag):
            updates[flag] = True
    try:
        return dataclasses.replace(test_cfg, **updates).check(where="command line / test_config")
    except ConfigError as exc:
        raise ConfigError(str(exc).replace("--crop_size 512 512", "--crop_size W H")) from None


def build_model_for_inference(cfg, model_path: str):
    """Build the config's model and load ``model_path`` into it strictly."""
    from segkit.checkpoint import load_model_file
    from segkit.logger import logger

    model = cfg.build_model()
    report = load_model_file(model, model_path)
    logger.info(f"Loaded {len(report.loaded)} tensors from {model_path}.")
    model.eval()
    return model
