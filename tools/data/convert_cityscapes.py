"""Make Cityscapes ``*_gtFine_labelTrainIds.png`` from the official ``*_gtFine_labelIds.png``.

Usage: python tools/data/convert_cityscapes.py data/cityscapes [--num_workers 4]

Uses the official labelId -> trainId table (19 classes, everything else 255). Files already
converted are skipped, so an interrupted run can simply be started again.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from segkit.datasets.convert import cityscapes_tasks, run_tasks  # noqa: E402
from segkit.errors import SegkitError  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="the Cityscapes folder holding gtFine/")
    parser.add_argument("--num_workers", type=int, default=os.cpu_count() or 1, help="parallel processes")
    args = parser.parse_args()
    tasks = cityscapes_tasks(args.root)
    written = run_tasks(tasks, args.num_workers, progress=_progress)
    print(f"\n{written} written, {len(tasks) - written} already present, {len(tasks)} labels in total")


def _progress(done: int, total: int) -> None:
    if done == total or done % 200 == 0:
        print(f"\r{done}/{total}", end="", flush=True)


if __name__ == "__main__":
    try:
        main()
    except SegkitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
