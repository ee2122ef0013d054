"""RTFormer parity with paddleseg==2.8.0 at full resolution (too slow for the test suite on CPU).

For each variant, a PaddleSeg RTFormer gets trained-looking weights (random BatchNorm statistics
and affine parameters), is saved, and loaded into segkit's RTFormer through the normal checkpoint
path (key remap included). Eval logits and both training logits (drop path off) are compared at
512x512 and 1024x512 (width x height) with batch sizes 1 and 2.

    python benchmarks/parity_rtformer.py [--variants slim base] [--tolerance 1e-4]
"""

import argparse
import os
import sys
import tempfile
import time

import numpy as np
import paddle

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from paddleseg.models.rtformer import RTFormer as PaddleSegRTFormer  # noqa: E402  (oracle)

from segkit.weights import load_weights, read_state_dict  # noqa: E402
from segkit.models.rtformer import RTFormer  # noqa: E402

VARIANTS = {
    "slim": dict(base_channels=32, head_channels=64, use_injection=[True, True]),
    "base": dict(base_channels=64, head_channels=128, use_injection=[True, False]),
}
SIZES = [(512, 512), (1024, 512)]  # (width, height)


def trained_looking(model: paddle.nn.Layer, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for name, tensor in model.state_dict().items():
        if name.endswith("_variance"):
            value = rng.uniform(0.5, 2.0, tensor.shape)
        elif name.endswith("_mean"):
            value = rng.normal(0.0, 0.3, tensor.shape)
        elif tensor.ndim == 1:
            value = rng.normal(1.0 if name.endswith("weight") and "conv" not in name else 0.0, 0.2, tensor.shape)
        else:
            value = tensor.numpy() * rng.uniform(0.8, 1.2, tensor.shape)
        tensor.set_value(value.astype("float32"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--tolerance", type=float, default=1e-4)
    args = parser.parse_args()

    rows, worst = [], 0.0
    for variant in args.variants:
        kwargs = dict(VARIANTS[variant], num_classes=19, drop_path_rate=0.0)
        paddle.seed(args.seed)
        oracle = PaddleSegRTFormer(**kwargs)
        trained_looking(oracle, args.seed)
        ours = RTFormer(**kwargs)
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "model.pdparams")
            paddle.save(oracle.state_dict(), path)
            checkpoint = read_state_dict(path)
        rng = np.random.default_rng(args.seed)
        for width, height in SIZES:
            for batch in args.batches:
                # every case starts from the trained-looking statistics (training mode moves them)
                oracle.set_state_dict(checkpoint)
                load_weights(ours, checkpoint, source=path)
                x = paddle.to_tensor(rng.normal(size=(batch, 3, height, width)).astype("float32"))
                start = time.perf_counter()
                with paddle.no_grad():
                    oracle.eval(), ours.eval()
                    expected = oracle(x)[0]
                    eval_diff = float((expected - ours(x)).abs().max())
                    scale = float(expected.abs().max())
                    # training mode: batch statistics (both models update their running stats alike)
                    oracle.train(), ours.train()
                    train_diffs = [float((a - b).abs().max()) for a, b in zip(oracle(x), ours(x))]
                worst = max(worst, eval_diff, *train_diffs)
                rows.append((variant, f"{width}x{height}", batch, eval_diff, *train_diffs, scale,
                             time.perf_counter() - start))

    header = f"{'variant':8} {'size':9} {'batch':>5} {'eval':>10} {'train main':>10} {'train aux':>10} {'|logit|max':>10} {'sec':>6}"
    print(header)
    print("-" * len(header))
    for variant, size, batch, e, tm, ta, scale, sec in rows:
        print(f"{variant:8} {size:9} {batch:5d} {e:10.2e} {tm:10.2e} {ta:10.2e} {scale:10.2f} {sec:6.1f}")
    verdict = "PASS" if worst <= args.tolerance else "FAIL"
    print(f"\nworst max abs diff {worst:.2e} (tolerance {args.tolerance:g}): {verdict}")
    sys.exit(0 if verdict == "PASS" else 1)


if __name__ == "__main__":
    main()
