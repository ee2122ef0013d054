"""segkit vs the PyTorch implementations, same machine, same threads, alternated in one run.

Rows (512x512, fp32, forward batch 1 in eval mode without gradients, train step batch 2 (``--train_batch``) =
forward + cross-entropy + backward + AdamW):
  * SegFormer-B0, 150 classes: segkit vs Hugging Face transformers ``SegformerForSemanticSegmentation``.
    The forward is compared at the head's resolution (stride 4), where HF stops; segkit's own
    final resize is left out with ``head_resolution`` (evaluation resizes only the classes that can
    win, see bench_class_map.py). Both training losses upsample the logits to the labels.
  * HRViT-b1 backbone: segkit vs the official facebookresearch/HRViT code (``--official`` names its
    models/hrvit.py; the run is skipped without it); loss = sum of the four maps' means.
The PyTorch side runs in a subprocess (``--torch_python``, a Python with torch, timm, einops and
transformers; ``benchmarks/_torch_worker.py``), so segkit never imports torch. Every round times,
in turn, segkit, PyTorch and a numpy 2048^3 float32 matmul probe (the CPU's usable peak at that
moment), each after a pause of ``PAUSE_SECONDS``: a process's idle OpenMP threads spin-wait for a
while after its step, and without the pause the two processes' spinning slowed each other's steps
several-fold (HF's forward took 1.89 s alternated against 0.24 s alone). The table gives medians,
the time ratio torch / segkit (> 1: segkit faster) per round and its spread, and segkit's MACs per
second as a share of the probe's.

segkit runs with the process settings of its tools (``runtime.reuse_freed_buffers``); PyTorch with glibc's
defaults, as its scripts run, or with the same allocator setting (``--torch_reuse_buffers``). By default each
process alternates forwards with train steps; with ``--forward_only`` both only run forwards, as ``tools/val.py``
or a serving process does.

Usage: python benchmarks/bench_vs_pytorch.py --torch_python /work/oracle-venv/bin/python
           [--official /path/to/HRViT/models/hrvit.py] [--rounds 3] [--threads N] [--skip_segformer]
           [--train_batch 2] [--size 512] [--torch_reuse_buffers] [--forward_only]
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import paddle  # noqa: E402

from segkit import runtime  # noqa: E402
import segkit.models  # noqa: E402,F401  (registers the models)
from segkit.complexity import count_macs  # noqa: E402
from segkit.losses import CrossEntropyLoss  # noqa: E402
from segkit.models import hrvit  # noqa: E402
from segkit.models.base import head_resolution  # noqa: E402
from segkit.registry import MODELS  # noqa: E402

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_torch_worker.py")


class TorchWorker:
    """The PyTorch model in a subprocess, timed one command at a time."""

    def __init__(self, python: str, model: str, threads: int, args):
        command = [python, WORKER, "--model", model, "--threads", str(threads), "--size", str(args.size),
                   "--train_batch", str(args.train_batch)]
        if args.official:
            command += ["--official", args.official]
        env = dict(os.environ)
        if args.torch_reuse_buffers:  # glibc's tunables: the same thresholds as runtime.reuse_freed_buffers
            env.update(MALLOC_MMAP_THRESHOLD_=str(runtime.REUSE_LIMIT), MALLOC_TRIM_THRESHOLD_=str(runtime.REUSE_KEEP))
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        ready = self.process.stdout.readline().split()
        if not ready or ready[0] != "ready":
            raise SystemExit(f"the PyTorch worker for {model} did not start (see its error above)")
        self.params, self.version = int(ready[1]), ready[-1]

    def time(self, command: str) -> float:
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return float(self.process.stdout.readline())

    def close(self) -> None:
        self.process.stdin.write("quit\n")
        self.process.stdin.close()
        self.process.wait(timeout=60)


def segkit_steps(name: str, size: int, train_batch: int):
    """(forward, train step, forward MACs) callables for one segkit row."""
    paddle.seed(0)
    if name == "segformer_b0":
        model = MODELS.get("segformer_b0")(num_classes=150)
        main = lambda out: out[0] if isinstance(out, list) else out  # noqa: E731
        criterion = CrossEntropyLoss()  # what segkit trains with (HF: cross-entropy, ignore_index 255)
        loss_of = lambda x, y: criterion(main(model(x)), y)  # noqa: E731
    else:
        model = hrvit.hrvit_b1_backbone(drop_path_rate=0.0)
        loss_of = lambda x, y: sum(o.mean() for o in model(x))  # noqa: E731
    optimizer = paddle.optimizer.AdamW(6e-5, parameters=model.parameters(), weight_decay=0.01)
    x1 = paddle.rand([1, 3, size, size])
    x2 = paddle.rand([train_batch, 3, size, size])
    labels = paddle.randint(0, 150, [train_batch, size, size])

    def forward():
        model.eval()
        with paddle.no_grad(), head_resolution(model):
            out = model(x1)
        (out[0] if isinstance(out, list) else out).numpy()

    def train():
        model.train()
        loss = loss_of(x2, labels)
        loss.backward()
        optimizer.step()
        optimizer.clear_grad()
        float(loss)

    with head_resolution(model):
        macs = count_macs(model, [1, 3, size, size]).total_macs
    return forward, train, macs


PAUSE_SECONDS = 1.0  # before each timed step: the other process's idle threads stop spinning


def timed_worker(worker, command: str) -> float:
    time.sleep(PAUSE_SECONDS)
    return worker.time(command)


def timed(fn) -> float:
    time.sleep(PAUSE_SECONDS)
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_row(name: str, label: str, args, threads: int, probe: np.ndarray):
    """Alternate segkit, torch and the probe for ``args.rounds`` rounds; print two table rows."""
    forward, train, macs = segkit_steps(name, args.size, args.train_batch)
    worker = TorchWorker(args.torch_python, name, threads, args)
    phases = [("forward", "fwd")] + ([] if args.forward_only else [("train step", "train")])
    forward(), worker.time("forward")  # warm-up
    if not args.forward_only:
        train(), worker.time("train")
    times = {k: [] for k in ("fwd", "fwd_torch", "train", "train_torch", "probe")}
    for _ in range(args.rounds):
        times["fwd"].append(timed(forward))
        times["fwd_torch"].append(timed_worker(worker, "forward"))
        times["probe"].append(timed(lambda: probe @ probe))
        if not args.forward_only:
            times["train"].append(timed(train))
            times["train_torch"].append(timed_worker(worker, "train"))
    worker.close()
    peak = 2 * 2048 ** 3 / statistics.median(times["probe"])  # FLOP/s
    for phase, key in phases:
        ratios = [t / s for s, t in zip(times[key], times[key + "_torch"])]
        seconds = statistics.median(times[key])
        share = 2 * macs * (1 if key == "fwd" else args.train_batch * 3) / seconds / peak  # train: ~3x forward
        print(f"| {label} {phase} | {seconds:.2f} | {statistics.median(times[key + '_torch']):.2f} | "
              f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f}) | {share:.1%} |")
    return statistics.median(times["probe"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--torch_python", default="/work/oracle-venv/bin/python")
    parser.add_argument("--official", default=None, help="the official HRViT models/hrvit.py (HRViT row)")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--train_batch", type=int, default=2, help="batch of the train step (both sides)")
    parser.add_argument("--threads", type=int, default=None, help="threads for both (default: all cores)")
    parser.add_argument("--skip_segformer", action="store_true", help="only the HRViT row")
    parser.add_argument("--forward_only", action="store_true",
                        help="no train steps: both processes only run forwards, as an evaluation or serving process")
    parser.add_argument("--torch_reuse_buffers", action="store_true",
                        help="give PyTorch segkit's allocator setting too (by default it runs as its scripts do)")
    args = parser.parse_args()
    threads = runtime.set_threads(args.threads)
    runtime.reuse_freed_buffers()  # as segkit's tools do (configure_process)
    probe = np.random.default_rng(0).standard_normal((2048, 2048)).astype(np.float32)
    print(f"{args.size}x{args.size}, train batch {args.train_batch}, {threads} threads each, {args.rounds} alternated "
          f"rounds, paddle {paddle.__version__}; segkit with its tools' allocator setting, PyTorch "
          f"{'with it too' if args.torch_reuse_buffers else 'with glibc defaults'}")
    print("| row | segkit (s) | PyTorch (s) | PyTorch / segkit per round, median (range) | segkit share of matmul peak |")
    print("|---|---|---|---|---|")
    probes = []
    if not args.skip_segformer:
        probes.append(bench_row("segformer_b0", "SegFormer-B0 vs HF transformers", args, threads, probe))
    if args.official:
        probes.append(bench_row("hrvit_b1", "HRViT-b1 backbone vs official", args, threads, probe))
    print(f"matmul probe: {', '.join(f'{2 * 2048 ** 3 / p / 1e9:.0f}' for p in probes)} GFLOP/s (median per row)")


if __name__ == "__main__":
    main()
