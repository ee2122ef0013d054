"""Where the deploy time goes: ONNX Runtime's per-node profile of an exported family, summed by op type.

    python benchmarks/profile_deploy.py [--rows segformer_b0 hrvit_b1 ...] [--runs 3] [--threads N]

Exports each row's model as ``bench_deploy.py`` does (random weights, 19 classes, batch 1, fp32,
dynamic shape, ONNX opset 17), runs it ``--runs`` times in ONNX Runtime with profiling on (after one
untimed run), and prints, per op type, its share of the summed node time, the MACs that
``segkit.complexity`` counts (matrix products and convolutions) and the GFLOP/s the row reaches, beside
the NumPy 2048^3 matmul probe's GFLOP/s measured in the same run.
"""

import argparse
import collections
import json
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import onnxruntime as ort  # noqa: E402

from bench_deploy import ROWS, exported, matmul_probe  # noqa: E402
from segkit.complexity import count_macs  # noqa: E402


def op_profile(onnx_path: str, x: np.ndarray, runs: int, threads: int):
    """(op type -> summed microseconds over ``runs``, mean ms per run) from ONNX Runtime's profiler."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.enable_profiling = True
    options.profile_file_prefix = os.path.join(os.path.dirname(onnx_path), "ort_profile")
    session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    session.run(None, {name: x})
    profile_path = session.end_profiling()
    session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
    for _ in range(runs + 1):
        session.run(None, {name: x})
    with open(session.end_profiling()) as f:
        events = json.load(f)
    os.remove(profile_path)
    runs_us = [e["dur"] for e in events if e.get("name") == "model_run"][1:]
    by_op = collections.Counter()
    node_events = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    per_run = len(node_events) // (runs + 1)
    for event in node_events[per_run:]:  # the first run is the warm-up
        by_op[event["args"]["op_name"]] += event["dur"]
    return by_op, float(np.mean(runs_us)) / 1e3


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--top", type=int, default=8, help="op types listed per row")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as workdir:
        for row in args.rows:
            variant, height, width = ROWS[row]
            model, save_dir = exported(variant, workdir)
            macs = count_macs(model, [1, 3, height, width]).total_macs
            x = np.random.default_rng(0).normal(size=(1, 3, height, width)).astype("float32")
            by_op, ms = op_profile(os.path.join(save_dir, "model.onnx"), x, args.runs, args.threads)
            probe = 2 * 2048 ** 3 / np.median([matmul_probe() for _ in range(3)]) / 1e9
            total = sum(by_op.values())
            print(f"\n{row}: {ms:.1f} ms per run in ONNX Runtime, {2 * macs / ms / 1e6:.1f} GFLOP/s counted "
                  f"({100 * 2 * macs / ms / 1e6 / probe:.1f}% of the probe's {probe:.0f} GFLOP/s)")
            print("| op type | share of node time | ms per run |\n|---|---|---|")
            for op, us in by_op.most_common(args.top):
                print(f"| {op} | {100 * us / total:.1f}% | {us / args.runs / 1e3:.1f} |")
            rest = total - sum(us for _, us in by_op.most_common(args.top))
            print(f"| (other {len(by_op) - args.top} types) | {100 * rest / total:.1f}% | {rest / args.runs / 1e3:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
