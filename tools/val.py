"""Evaluate a trained model on the config's val_dataset: python tools/val.py --config ... --model_path ..."""

import argparse
import os

import paddle
from _common import (add_config_args, add_not_supported_args, add_runtime_args, add_test_args, apply_runtime,
                     build_model_for_inference, run_cli, test_config_from_args, yes_no)

from segkit.config import INFERENCE_SECTIONS, load_config
from segkit.engine.checkpoints import require_writable_folder
from segkit.engine.evaluate import check_auc_roc, evaluate, write_reports
from segkit.engine.report import write_html_report
from segkit.models.base import seed_inference


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    add_config_args(parser)
    add_test_args(parser, aug_flag="aug_eval")
    parser.add_argument("--save_dir", default="output/eval", help="where metrics.json and the other reports go")
    parser.add_argument("--num_workers", type=int, default=0, help="data-loading worker processes")
    parser.add_argument("--html", action="store_true",
                        help="also write report.html: metrics, sortable per-class table, confusion matrix, worst images")
    parser.add_argument("--html_images", type=int, default=24, metavar="N",
                        help="with --html: side-by-side pictures of the N images with the lowest mIoU (default 24)")
    parser.add_argument("--auc_roc", nargs="?", const=True, default=False, type=yes_no, metavar="BOOL",
                        help="binary segmentation: also report the area under the ROC curve of the class-1 "
                             "probability (PaddleSeg's spelling --auc_roc True works too)")
    add_runtime_args(parser)
    add_not_supported_args(parser, "--data_format")
    args = parser.parse_args(argv)
    apply_runtime(args)
    require_writable_folder(args.save_dir)  # before the model is loaded
    cfg = load_config(args.config, args.opts, sections=INFERENCE_SECTIONS)
    test_cfg = test_config_from_args(cfg, args)
    dataset = cfg.build_dataset("val")
    if args.auc_roc:
        check_auc_roc(dataset)  # before the model is loaded
    model = build_model_for_inference(cfg, args.model_path)
    seed_inference(model, args.seed)
    result = evaluate(model, dataset, test_cfg, num_workers=args.num_workers, keep_worst=args.html_images if args.html else 0,
                      auc_roc=args.auc_roc)
    if paddle.distributed.get_rank() == 0:
        written = write_reports(result, args.save_dir, getattr(dataset, "class_names", None))
        if args.html:
            written.append(write_html_report(result, args.save_dir, dataset.class_names, dataset.palette,
                                             dataset.ignore_index, dataset.img_channels,
                                             title=f"{os.path.basename(args.config)}: {args.model_path}"))
        print(f"reports written to {os.path.abspath(args.save_dir)}: {', '.join(os.path.basename(p) for p in written)}")


if __name__ == "__main__":
    run_cli(main)
