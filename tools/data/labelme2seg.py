"""LabelMe annotations to a training-ready dataset.

Usage:
  python tools/data/labelme2seg.py my_photos/ data/my_dataset [--class_names classes.txt] [--split 0.8 0.2]
  python tools/train.py --config data/my_dataset/segformer_b0.yml --do_eval --save_dir output/my_dataset

Reads every LabelMe .json under the input folder (with its image next to it, or embedded), and writes
images/, annotations/ (PNG, pixel value = class id, 0 = _background_, 255 = __ignore__),
class_names.txt, train.txt / val.txt and segformer_b0.yml: the quickstart's SegFormer-B0 recipe on
this dataset. Shapes are painted in file order, so a later shape covers an earlier one (draw a
_background_ polygon inside another to cut a hole).
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tools/, for _common

from _common import run_cli  # noqa: E402

from segkit.config import load_config  # noqa: E402
from segkit.datasets.labelme import convert_labelme, training_config, write_config  # noqa: E402
from segkit.errors import ConfigError  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RECIPE = os.path.join(ROOT, "configs", "quickstart", "segformer_b0_scenes.yml")


def main(argv=None) -> None:
    """Parse the flags, convert the annotations and write the training config."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("input_dir", help="folder with LabelMe .json files (searched recursively)")
    parser.add_argument("output_dir", help="dataset folder to write")
    parser.add_argument("--class_names", help="a file with one class name a line, _background_ first "
                        "(default: _background_, then the labels in order of first appearance)")
    parser.add_argument("--split", type=float, nargs="+", default=[0.8, 0.2], metavar="FRACTION",
                        help="train val [test] fractions (default 0.8 0.2)")
    parser.add_argument("--seed", type=int, default=0, help="shuffle seed for --split")
    parser.add_argument("--crop_size", type=int, default=512, help="training crop of the written config (default 512)")
    args = parser.parse_args(argv)
    if not 2 <= len(args.split) <= 3 or any(f < 0 for f in args.split) or abs(sum(args.split) - 1) > 1e-6:
        raise ConfigError(f"--split: expected 2 or 3 fractions >= 0 that sum to 1 (e.g. 0.8 0.2), got {args.split}.")
    summary = convert_labelme(args.input_dir, args.output_dir, args.class_names, args.split, args.seed)
    names = summary["class_names"]
    config_path = os.path.join(args.output_dir, "segformer_b0.yml")
    config = training_config(load_config(RECIPE, []).data, args.output_dir, names, args.crop_size,
                             summary["lists"]["train.txt"])
    write_config(config_path, config, f"SegFormer-B0 on {os.path.abspath(args.output_dir)} "
                 "(written by tools/data/labelme2seg.py from configs/quickstart/segformer_b0_scenes.yml)")
    print(f"{len(names)} classes: {', '.join(f'{i} {n}' for i, n in enumerate(names))}")
    print(", ".join(f"{name}: {n} images" for name, n in summary["lists"].items()))
    print(f"train with: python tools/train.py --config {config_path} --do_eval --save_dir output/{os.path.basename(os.path.normpath(args.output_dir))}")


if __name__ == "__main__":
    run_cli(main)
