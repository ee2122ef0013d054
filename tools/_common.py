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
