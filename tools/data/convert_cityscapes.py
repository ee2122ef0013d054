"""Make Cityscapes ``*_gtFine_labelTrainIds.png`` from the official ``*_gtFine_labelIds.png``.

Usage: python tools/data/convert_cityscapes.py data/cityscapes [--num_workers 4]

Uses the official labelId -> trainId table (19 classes, everything else 255). Files already
converted are skipped, so an interrupted run can simply be started again.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tools/, for _common

from _common import run_cli, run_conversions  # noqa: E402

from segkit.datasets.convert import cityscapes_tasks  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="the Cityscapes folder holding gtFine/")
    parser.add_argument("--num_workers", type=int, default=os.cpu_count() or 1, help="parallel processes")
    args = parser.parse_args()
    tasks = cityscapes_tasks(args.root)
    run_conversions(tasks, args.num_workers)


if __name__ == "__main__":
    run_cli(main)
