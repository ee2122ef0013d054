"""Look at a dataset as the model sees it: python tools/browse_dataset.py --config ... --split train --num 20

Writes one PNG per sample into --save_dir: the image after the split's transforms (augmentation
included), the label over it and the label alone, with a legend of the class ids and names present.
"""

import argparse
import os

import numpy as np
from _common import add_config_args, run_cli

from segkit.config import load_config
from segkit.datasets.browse import sample_picture
from segkit.errors import ConfigError
from segkit.progress import track


def main(argv=None):
    """Parse the flags and draw the samples."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_args(parser)
    parser.add_argument("--split", choices=("train", "val"), default="train", help="train_dataset or val_dataset")
    parser.add_argument("--num", type=int, default=20, help="how many samples to draw (default 20)")
    parser.add_argument("--shuffle", action="store_true", help="random samples (drawn with --seed) instead of the first ones")
    parser.add_argument("--seed", type=int, default=0,
                        help="the training seed: each sample gets the augmentation of the first epoch of that run")
    parser.add_argument("--save_dir", default="output/browse", help="where the PNGs go")
    args = parser.parse_args(argv)
    if args.num < 1:
        raise ConfigError(f"--num: expected at least 1 sample, got {args.num}.")
    dataset = load_config(args.config, args.opts).build_dataset(args.split)
    count = min(args.num, len(dataset))
    order = np.random.default_rng(args.seed).permutation(len(dataset)) if args.shuffle else np.arange(len(dataset))
    os.makedirs(args.save_dir, exist_ok=True)
    for index in track([int(i) for i in order[:count]], desc="drawing", unit="sample"):
        stem = os.path.splitext(os.path.basename(dataset.file_list[index][0]))[0]
        path = os.path.join(args.save_dir, f"{args.split}_{index:05d}_{stem}.png")
        sample_picture(dataset, index, args.seed).save(path)
    print(f"{count} {args.split} samples written to {os.path.abspath(args.save_dir)}")


if __name__ == "__main__":
    run_cli(main)
