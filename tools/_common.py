"""What the command-line tools share: the repository on ``sys.path`` (so a checkout runs without
installing), ``--config``/``--opts`` and the other common flags, and ``run_cli``, the one error
handler (exit status 2 for bad input). A tool parses its flags, calls segkit and prints."""

import argparse
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from segkit import runtime  # noqa: E402  (imports no Paddle)
from segkit.errors import ConfigError, SegkitError, StoppedBySignal  # noqa: E402


def add_config_args(parser: argparse.ArgumentParser) -> None:
    """``--config`` and ``--opts``, common to every tool."""
    parser.add_argument("--config", required=True, help="YAML config file")
    parser.add_argument("--opts", nargs="+", default=[], metavar="KEY=VALUE",
                        help="override config keys, e.g. --opts batch_size=4 model.backbone.type=mit_b1")


def add_runtime_args(parser: argparse.ArgumentParser) -> None:
    """``--device`` and ``--threads``, common to the tools that run a model."""
    parser.add_argument("--device", default=None, help="cpu, gpu, xpu, npu or mlu (default: Paddle's, the GPU "
                        "when this build has one); a device this Paddle build lacks is an error")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU compute threads per process (default: every available core, shared between the "
                             "processes of a distributed launch)")


def yes_no(text: str) -> bool:
    """A boolean flag value as PaddleSeg users type it: True/False, true/false, 1/0, yes/no."""
    value = text.strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {text!r}")


class _NotSupported(argparse.Action):
    """A PaddleSeg flag segkit deliberately lacks: one line saying so and what to do instead."""

    def __init__(self, option_strings, dest, advice: str, accepted=(), **kwargs):
        super().__init__(option_strings, dest, nargs="?", default=argparse.SUPPRESS, **kwargs)
        self.advice, self.accepted = advice, accepted

    def __call__(self, parser, namespace, values, option_string=None):
        if values in self.accepted:
            return
        given = f"{option_string} {values}" if values is not None else option_string
        raise ConfigError(f"{given}: segkit does not support this PaddleSeg flag; {self.advice}")


# PaddleSeg flags segkit deliberately lacks, and what to do instead. --data_format NCHW (PaddleSeg's
# default) is accepted and changes nothing.
NOT_SUPPORTED = {
    "--data_format": ("models run in NCHW only (PaddleSeg supports NHWC for DeepLabV3P alone); drop the flag.",
                      ("NCHW",)),
    "--profiler_options": ("profile with python -m cProfile tools/train.py ... or paddle.profiler in your own script.",
                           ()),
}


def add_not_supported_args(parser: argparse.ArgumentParser, *flags: str) -> None:
    """Register PaddleSeg ``flags`` that segkit lacks, so they fail with one clear line (exit 2)."""
    for flag in flags:
        advice, accepted = NOT_SUPPORTED[flag]
        parser.add_argument(flag, action=_NotSupported, advice=advice, accepted=accepted, help=argparse.SUPPRESS)


def apply_runtime(args) -> int:
    """Set the process-wide runtime from the parsed flags (``segkit.runtime.configure_process``);
    returns the number of compute threads."""
    from segkit.logger import logger

    threads = runtime.configure_process(args.threads, args.device)
    logger.info(f"Compute threads: {threads} (of {runtime.available_cores()} available cores; --threads to change).")
    stop_on_signals()
    return threads


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stopped(StoppedBySignal):
    """The tool was stopped by a signal (exit status 128 + its number)."""

    def __init__(self, signum: int):
        tool = os.path.basename(sys.argv[0])
        super().__init__(f"{signal.Signals(signum).name} received: {tool} stopped.", signum)


def stop_on_signals() -> None:
    """Make SIGINT and SIGTERM end the tool with one line and status 130 / 143 (through ``run_cli``).

    Without this, SIGTERM meets the C++ handler ``import paddle`` installs, which prints a C++
    stack, and SIGINT a KeyboardInterrupt traceback. Called once paddle is imported (it would
    replace the handlers installed before); training then notes the signals itself, to stop at a
    clean point. A process forked from this one (a DataLoader worker, until its own ``worker_init``
    runs) ignores them: the main process stops it.
    """
    pid = os.getpid()

    def stop(signum, frame):  # noqa: ARG001 (a signal handler's signature)
        if os.getpid() != pid:
            signal.signal(signum, signal.SIG_IGN)
            return
        raise Stopped(signum)

    for sig in STOP_SIGNALS:
        signal.signal(sig, stop)


def run_cli(main) -> None:
    """Run a tool's ``main()`` and exit with the status it returns (None: 0), the one error handler of
    every tool: bad input (a SegkitError) prints one clear message, no traceback, and exits with status 2;
    a signal (``stop_on_signals``) one line and 128 + its number. The signal handlers in place before
    ``main()`` are put back afterwards (for a tool run inside another program, such as the tests)."""
    handlers = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    try:
        status = main()
    except SegkitError as exc:
        code = getattr(exc, "exit_status", 2)  # 2 for bad input; 128 + N for a run stopped by signal N
        if int(os.environ.get("PADDLE_TRAINERS_NUM", "1")) > 1:
            _leave_distributed_run(f"error: {exc}", code)
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(code)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
    sys.exit(status or 0)


def _leave_distributed_run(message: str, status: int) -> None:
    """Print ``message`` and end this rank at once.

    ``paddle.distributed.launch`` stops the other ranks (SIGTERM) as soon as one exits with an
    error, and every rank raises at the same step, so a rank still tearing down its DataLoader
    and process group would be killed mid-way and Paddle's signal handler would print a C++
    traceback under the message. The default SIGTERM action and an immediate exit avoid both.
    """
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    print(message, file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(status)


def add_test_args(parser: argparse.ArgumentParser, aug_flag: str) -> None:
    """The inference flags of val.py and predict.py (sliding window, multi-scale, flips, seed).

    ``aug_flag`` is the tool's name for test-time augmentation (``aug_eval`` or ``aug_pred``); it
    is remembered so that error messages name the flag the user can actually type.
    """
    parser.add_argument("--model_path", required=True, help="model.pdparams, a checkpoint folder, a URL or a zip")
    parser.add_argument("--is_slide", action="store_true", help="sliding-window inference (needs --crop_size and --stride)")
    parser.add_argument("--crop_size", type=int, nargs=2, metavar=("W", "H"), help="window size for --is_slide")
    parser.add_argument("--stride", type=int, nargs=2, metavar=("W", "H"), help="window step for --is_slide")
    # predict.py also takes --aug_eval, the name the test_config key and its messages use.
    names = [f"--{aug_flag}"] + (["--aug_eval"] if aug_flag != "aug_eval" else [])
    parser.add_argument(*names, dest="aug_eval", action="store_true",
                        help="test-time augmentation: average softmax over --scales and flips")
    parser.add_argument("--scales", type=float, nargs="+", help=f"image scales for --{aug_flag}, e.g. 0.75 1.0 1.25")
    parser.add_argument("--flip_horizontal", action="store_true", help=f"add horizontally flipped copies (with --{aug_flag})")
    parser.add_argument("--flip_vertical", action="store_true", help=f"add vertically flipped copies (with --{aug_flag})")
    parser.add_argument("--seed", type=int, default=0,
                        help="paddle.seed before the first image, and the seed of SegNeXt's fixed NMF bases (as export.py --seed)")
    parser.set_defaults(aug_flag_name=f"--{aug_flag}")


def test_config_from_args(cfg, args):
    """The config's test_config with the command-line flags applied on top.

    A flag that would have no effect is an error naming that flag: ``--scales`` or a flip without
    augmentation, ``--crop_size`` / ``--stride`` without sliding, and ``--is_slide`` without a
    window size and step (from the flags or the config).
    """
    import dataclasses

    from segkit.errors import ConfigError

    aug = getattr(args, "aug_flag_name", "--aug_eval")
    test_cfg = cfg.test_config()
    aug_on = args.aug_eval or test_cfg.aug_eval
    slide_on = args.is_slide or test_cfg.is_slide
    for flag, given, needs, on in (
        ("--scales", args.scales is not None, aug, aug_on),
        ("--flip_horizontal", args.flip_horizontal, aug, aug_on),
        ("--flip_vertical", args.flip_vertical, aug, aug_on),
        ("--crop_size", args.crop_size is not None, "--is_slide", slide_on),
        ("--stride", args.stride is not None, "--is_slide", slide_on),
    ):
        if given and not on:
            raise ConfigError(
                f"{flag} was given without {needs}, so it would be ignored. Add {needs} (or "
                f"test_config.{needs[2:].replace('aug_pred', 'aug_eval')}: true in the config) or drop {flag}."
            )
    updates = {k: getattr(args, k) for k in ("crop_size", "stride", "scales") if getattr(args, k) is not None}
    for flag in ("is_slide", "aug_eval", "flip_horizontal", "flip_vertical"):
        if getattr(args, flag):
            updates[flag] = True
    merged = dataclasses.replace(test_cfg, **updates)
    if merged.is_slide and (not merged.crop_size or not merged.stride):
        missing = " and ".join(f for f, v in (("--crop_size W H", merged.crop_size), ("--stride W H", merged.stride)) if not v)
        raise ConfigError(
            f"--is_slide needs a window size and step, but {missing} {'is' if ' and ' not in missing else 'are'} "
            "missing (neither given nor in test_config). Add e.g. --crop_size 1024 512 --stride 768 384."
        )
    return merged.check(where="test_config")


def build_model_for_inference(cfg, model_path: str):
    """Build the config's model and load ``model_path`` into it strictly (the config's pretrained
    weights are not fetched: these replace them)."""
    from segkit.logger import logger
    from segkit.weights import WeightsSpec, apply_weights

    model = cfg.build_model(pretrained=False)
    report = apply_weights(model, WeightsSpec(model_path))
    logger.info(f"Loaded {len(report.loaded)} tensors from {model_path}.")
    model.eval()
    return model


def run_conversions(tasks, num_workers: int) -> None:
    """Run label conversions (``segkit.datasets.convert``) with progress and a summary."""
    from segkit.datasets.convert import run_tasks

    written = run_tasks(tasks, num_workers)
    print(f"{written} written, {len(tasks) - written} already present, {len(tasks)} labels in total")
