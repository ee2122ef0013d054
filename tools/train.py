"""Train a model from a config: python tools/train.py --config configs/... [--do_eval]

On several GPUs (or CPU processes) start it through Paddle's launcher, e.g.
``python -m paddle.distributed.launch --devices 0,1,2,3 tools/train.py --config ...``;
``--batch_size`` is then per process.
"""

import argparse

from _common import add_config_args, add_not_supported_args, add_runtime_args, apply_runtime, run_cli

from segkit.config import load_config
from segkit.engine.train import Trainer, TrainOptions


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    add_config_args(parser)
    parser.add_argument("--do_eval", action="store_true", help="evaluate at every save_interval and keep best_model")
    parser.add_argument("--use_vdl", action="store_true", help="write VisualDL scalars to save_dir/vdl")
    parser.add_argument("--save_interval", type=int, default=1000, help="iterations between checkpoints (and evaluations)")
    parser.add_argument("--save_dir", default="output", help="where checkpoints, logs and the resolved config go")
    parser.add_argument("--keep_checkpoint_max", type=int, default=5, help="how many iter_N checkpoints to keep")
    parser.add_argument("--resume_model", default=None, help="a save_dir/iter_N folder to continue from, or 'auto' (the newest complete one in save_dir)")
    parser.add_argument("--overwrite", action="store_true",
                        help="start afresh in a save_dir that holds an earlier run's checkpoints (they are deleted)")
    parser.add_argument("--log_iters", type=int, default=10, help="iterations between log lines")
    parser.add_argument("--iters", type=int, default=None, help="override the config's iters")
    parser.add_argument("--batch_size", type=int, default=None, help="override the config's batch_size (per device)")
    parser.add_argument("--learning_rate", type=float, default=None, help="override lr_scheduler.learning_rate")
    parser.add_argument("--seed", type=int, default=0, help="seed for weights, data order, augmentation and dropout")
    parser.add_argument("--num_workers", type=int, default=0, help="data-loading worker processes")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"], help="mixed precision")
    parser.add_argument("--amp_level", default="O1", choices=["O1", "O2"], help="mixed-precision level")
    parser.add_argument("--use_ema", action="store_true", help="keep an exponential moving average of the weights")
    parser.add_argument("--ema_decay", type=float, default=0.9999, help="EMA decay per step")
    parser.add_argument("--accumulate_steps", type=int, default=1,
                        help="micro-batches of batch_size per optimizer step (the effective batch is multiplied by it)")
    parser.add_argument("--early_stop_intervals", type=int, default=None, metavar="N",
                        help="with --do_eval: stop after N evaluations below the best mIoU (best_model is kept)")
    parser.add_argument("--repeats", type=int, default=1, help="repeat the training samples N times in each epoch")
    parser.add_argument("--sync_bn", action="store_true", help="BatchNorm statistics over all processes (GPUs only)")
    add_runtime_args(parser)
    add_not_supported_args(parser, "--data_format", "--profiler_options")
    return parser.parse_args(argv)


def build_trainer(argv=None) -> Trainer:
    """Parse the command line, load the config with its overrides and build the trainer."""
    args = parse_args(argv)
    apply_runtime(args)
    opts = list(args.opts)
    for flag, key in (("iters", "iters"), ("batch_size", "batch_size"), ("learning_rate", "lr_scheduler.learning_rate")):
        if getattr(args, flag) is not None:
            opts.append(f"{key}={getattr(args, flag)}")
    cfg = load_config(args.config, opts)
    options = TrainOptions(**{f: getattr(args, f) for f in TrainOptions.__dataclass_fields__})
    return Trainer(cfg, options)


def main(argv=None):
    build_trainer(argv).train()


if __name__ == "__main__":
    run_cli(main)
