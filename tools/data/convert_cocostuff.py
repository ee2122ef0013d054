"""Map COCO-Stuff 164k stuffthingmaps (182 ids with gaps) to 171 contiguous training ids.

Usage: python tools/data/convert_cocostuff.py data/cocostuff [--num_workers 4]

Reads ``annotations/{train2017,val2017}/<name>.png`` (from stuffthingmaps_trainval2017.zip) and
writes ``<name>_labelTrainIds.png`` beside each (255 stays unlabelled). Files already converted
are skipped, so an interrupted run can simply be started again.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tools/, for _common

from _common import run_cli, run_conversions  # noqa: E402

from segkit.datasets.convert import cocostuff_tasks  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="the COCO-Stuff folder holding images/ and annotations/")
    parser.add_argument("--splits", nargs="+", default=["train2017", "val2017"], help="annotation subfolders")
    parser.add_argument("--num_workers", type=int, default=os.cpu_count() or 1, help="parallel processes")
    args = parser.parse_args()
    tasks = cocostuff_tasks(args.root, args.splits)
    run_conversions(tasks, args.num_workers)


if __name__ == "__main__":
    run_cli(main)
