"""Write file lists (``image<sep>label`` per line) for the generic ``Dataset``.

Usage:
  # one list per split folder (e.g. CamVid: train/ + trainannot/, val/ + valannot/, ...)
  python tools/data/create_file_list.py data/camvid --pair train trainannot train.txt \\
      --pair val valannot val.txt --pair test testannot test.txt
  # one folder of pairs cut at random into train / val (/ test) lists
  python tools/data/create_file_list.py data/mine --pair images labels all --split 0.8 0.2

Images and labels are paired by their path relative to the two folders, minus the suffixes
(``--image_suffix``, ``--label_suffix``); an unpaired file is an error naming it. Paths in the
lists are relative to the dataset root, as the ``Dataset`` expects.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tools/, for _common

from _common import run_cli  # noqa: E402

from segkit.datasets.convert import find_pairs, split_pairs, write_file_list  # noqa: E402

SPLIT_NAMES = ("train.txt", "val.txt", "test.txt")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("root", help="dataset root; list paths are relative to it")
    parser.add_argument("--pair", nargs=3, action="append", required=True, metavar=("IMAGES", "LABELS", "LIST"),
                        help="image folder, label folder and output list name (repeatable)")
    parser.add_argument("--image_suffix", default=".png", help="image file ending, e.g. .jpg")
    parser.add_argument("--label_suffix", default=".png", help="label file ending, e.g. _labelTrainIds.png")
    parser.add_argument("--separator", default=" ", help="field separator in the lists")
    parser.add_argument("--split", type=float, nargs="+", metavar="FRACTION",
                        help="cut the (single) pair into train/val[/test] lists with these fractions")
    parser.add_argument("--seed", type=int, default=0, help="shuffle seed for --split")
    args = parser.parse_args()
    if args.split and len(args.pair) != 1:
        parser.error("--split needs exactly one --pair")
    if args.split and not 2 <= len(args.split) <= 3:
        parser.error("--split takes 2 (train val) or 3 (train val test) fractions")
    for image_dir, label_dir, list_name in args.pair:
        pairs = find_pairs(args.root, image_dir, label_dir, args.image_suffix, args.label_suffix)
        if args.split:
            for name, part in zip(SPLIT_NAMES, split_pairs(pairs, args.split, args.seed)):
                write_file_list(os.path.join(args.root, name), part, args.separator)
                print(f"{os.path.join(args.root, name)}: {len(part)} pairs")
        else:
            write_file_list(os.path.join(args.root, list_name), pairs, args.separator)
            print(f"{os.path.join(args.root, list_name)}: {len(pairs)} pairs")


if __name__ == "__main__":
    run_cli(main)
