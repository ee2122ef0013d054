"""Scan the labels of a config's datasets before training on them.

Usage: python tools/check_dataset.py --config configs/x.yml [--opts train_dataset.dataset_root=...]

For train_dataset and val_dataset, reads every label as training would (after the dataset's id
mapping) and reports values outside [0, num_classes) other than the ignore index, labels whose
size differs from their image, RGB / palette / JPEG labels, 0/255 binary masks and the per-class
pixel histogram, then suggests a fix. Exit status: 0 clean, 1 problems found, 2 unusable config
or dataset.
"""

import argparse

from _common import add_config_args, run_cli

from segkit.config import load_config
from segkit.data_check import format_report, scan_dataset
from segkit.errors import ConfigError

SECTIONS = {"train": "train_dataset", "val": "val_dataset"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_args(parser)
    parser.add_argument("--splits", nargs="+", default=["train", "val"], choices=sorted(SECTIONS),
                        help="which datasets to scan")
    parser.add_argument("--limit", type=int, help="scan only the first N labels of each dataset")
    parser.add_argument("--num_workers", type=int, default=0, help="processes reading labels in parallel")
    args = parser.parse_args(argv)

    cfg = load_config(args.config, args.opts)
    clean = True
    scanned = 0
    for split in args.splits:
        if not cfg.has(SECTIONS[split]):
            print(f"{SECTIONS[split]}: not in the config, skipped")
            continue
        dataset = cfg.build_dataset(split)
        report = scan_dataset(dataset, limit=args.limit, num_workers=args.num_workers)
        title = f"{SECTIONS[split]}: {type(dataset).__name__}, {len(dataset)} samples, {dataset.num_classes} classes"
        print(format_report(report, dataset.class_names, title))
        clean = clean and report.ok
        scanned += 1
    if not scanned:
        raise ConfigError(f"{args.config}: no train_dataset or val_dataset section to scan.")
    return 0 if clean else 1


if __name__ == "__main__":
    run_cli(main)
