"""ONNX Runtime session settings on segkit's exports, alternated in one run with the matmul probe.

    python benchmarks/bench_ort_options.py [--rows segnext_t segformer_b0 ...] [--rounds 7] [--threads 2]

Exports each row as ``bench_deploy.py`` does and times, per round in a rotating order, ONNX Runtime
with: its defaults (graph optimisation level 'all', idle threads spinning), spinning off (segkit's
default), optimisation level 'extended', level 'basic', and denormals flushed to zero. Prints the
median ms per setting and the probe's GFLOP/s with the load average.
"""

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import onnxruntime as ort  # noqa: E402

from bench_deploy import ROWS, exported, matmul_probe  # noqa: E402

LEVELS = ort.GraphOptimizationLevel
SETTINGS = {  # name -> (graph optimisation level, session config entries)
    "ONNX Runtime defaults (level all, spinning)": (LEVELS.ORT_ENABLE_ALL, {}),
    "spinning off (segkit)": (LEVELS.ORT_ENABLE_ALL, {"session.intra_op.allow_spinning": "0"}),
    "level extended": (LEVELS.ORT_ENABLE_EXTENDED, {}),
    "level basic": (LEVELS.ORT_ENABLE_BASIC, {}),
    "denormals as zero": (LEVELS.ORT_ENABLE_ALL, {"session.set_denormal_as_zero": "1"}),
}


def session(path: str, threads: int, level, entries):
    """An ONNX Runtime CPU session of ``path`` with one setting."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = level
    for key, value in entries.items():
        options.add_session_config_entry(key, value)
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=["segnext_t", "segformer_b0"])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as workdir:
        for row in args.rows:
            variant, height, width = ROWS[row]
            path = os.path.join(exported(variant, workdir)[1], "model.onnx")
            x = {"x": np.random.default_rng(0).normal(size=(1, 3, height, width)).astype("float32")}
            sessions = {name: session(path, args.threads, *setting) for name, setting in SETTINGS.items()}
            for s in sessions.values():
                s.run(None, x)
            times, probes, keys = {name: [] for name in sessions}, [], list(sessions)
            for r in range(args.rounds):
                probes.append(matmul_probe())
                for name in keys[r % len(keys):] + keys[:r % len(keys)]:
                    start = time.perf_counter()
                    sessions[name].run(None, x)
                    times[name].append(time.perf_counter() - start)
            load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
            print(f"\n{row}: probe {2 * 2048 ** 3 / np.median(probes) / 1e9:.0f} GFLOP/s, load {load}")
            for name, values in times.items():
                print(f"| {name} | {1e3 * np.median(values):.1f} ms |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
