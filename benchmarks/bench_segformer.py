"""SegFormer speed on this machine: segkit vs the PaddleSeg 2.8.0 oracle, same weights, same inputs.

Measures, for each implementation, the median wall time of
  * inference: eval mode, ``paddle.no_grad()``, one forward;
  * a training step: train mode, forward, cross-entropy, backward, AdamW step, clear_grad;
after warm-up runs, alternating the two implementations so drift on a shared machine hits both.
Also prints the multiply-accumulates counted analytically (conv, linear, attention matmuls), for
the textbook decoder (as the paper counts) and for segkit's folded decoder.

Usage: python benchmarks/bench_segformer.py [--variant b0] [--size 512] [--batch 1] [--runs 10] [--threads N]

Both implementations run with the same compute threads (``--threads``, default every core, as
segkit's tools use; Paddle's own default is one).
"""

import argparse
import os
import statistics
import sys
import time
from typing import Callable, Dict

import numpy as np
import paddle
import paddle.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import segkit.models  # noqa: E402,F401
from segkit import runtime  # noqa: E402
from segkit.weights import load_weights  # noqa: E402
from segkit.models import segformer as sf  # noqa: E402


def analytic_gmacs(variant: str, height: int, width: int, num_classes: int, folded: bool) -> float:
    """Multiply-accumulates of conv, linear and attention matmuls (norms/activations/resizes ignored)."""
    cfg = sf.MIT_VARIANTS[variant.upper()]
    e = sf.SEGFORMER_DECODER_DIMS[variant.upper()]
    macs = 0
    c_in, h, w = 3, height, width
    tokens = []
    for i, (c, depth, r) in enumerate(zip(cfg["embed_dims"], cfg["depths"], (8, 4, 2, 1))):
        k, s = (7, 4) if i == 0 else (3, 2)
        h, w = (h + 2 * (k // 2) - k) // s + 1, (w + 2 * (k // 2) - k) // s + 1
        n = h * w
        macs += n * c_in * c * k * k
        m = ((h - r) // r + 1) * ((w - r) // r + 1) if r > 1 else n
        per_block = (
            n * c * c  # q
            + (m * c * c * r * r if r > 1 else 0)  # spatial-reduction conv
            + m * c * 2 * c  # kv
            + 2 * n * m * c  # q k^T and attn v
            + n * c * c  # proj
            + n * c * 4 * c * 2  # fc1, fc2
            + n * 4 * c * 9  # depthwise 3x3
        )
        macs += depth * per_block
        tokens.append((n, c))
        c_in = c
    n1 = tokens[0][0]
    if folded:
        macs += sum(n * c * e + c * e * e for n, c in tokens)  # per-level folded 1x1 conv + weight fold
    else:
        macs += sum(n * c * e for n, c in tokens) + n1 * 4 * e * e  # linears + fusion conv at stride 4
    macs += n1 * e * num_classes
    return macs / 1e9


def timed_ms(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


class TextbookDecoder(paddle.nn.Layer):
    """segkit's SegFormer run with the unfolded decoder (linear, resize, concat, wide 1x1 conv).

    Shares the parameters of ``model``; it only separates the decoder fold's share of the speed-up
    from the encoder's.
    """

    def __init__(self, model: sf.SegFormer):
        super().__init__()
        self.model = model

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        head = self.model.head
        feats = self.model.backbone(x)
        size = feats[0].shape[2:]
        embedded = []
        for linear, feat in zip(head.embed, feats):
            y = paddle.matmul(feat.flatten(2), linear.weight, transpose_x=True) + linear.bias
            y = y.transpose([0, 2, 1]).reshape([feat.shape[0], -1, *feat.shape[2:]])
            embedded.append(F.interpolate(y, size=size, mode="bilinear") if feat.shape[2:] != size else y)
        logits = head.classifier(head.dropout(head.fuse(paddle.concat(embedded[::-1], axis=1))))
        return F.interpolate(logits, size=x.shape[2:], mode="bilinear")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="b0", choices=[f"b{i}" for i in range(6)])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--classes", type=int, default=150)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="compute threads (default: every core)")
    args = parser.parse_args()
    threads = runtime.set_threads(args.threads)

    from paddleseg import models as ps  # test/benchmark-only oracle

    paddle.seed(0)
    variant = args.variant.upper()
    ref = ps.SegFormer(args.classes, getattr(ps.backbones, f"MixVisionTransformer_{variant}")(),
                       sf.SEGFORMER_DECODER_DIMS[variant])
    ours = getattr(sf, f"segformer_{args.variant}")(num_classes=args.classes)
    load_weights(ours, {k: v.numpy() for k, v in ref.state_dict().items()}, source="paddleseg model")

    rng = np.random.default_rng(0)
    x = paddle.to_tensor(rng.normal(size=(args.batch, 3, args.size, args.size)).astype("float32"))
    label = paddle.to_tensor(rng.integers(0, args.classes, size=(args.batch, args.size, args.size)).astype("int64"))

    models: Dict[str, paddle.nn.Layer] = {"segkit": ours, "paddleseg": ref, "segkit_unfolded": TextbookDecoder(ours)}
    optimizers = {name: paddle.optimizer.AdamW(6e-5, parameters=m.parameters(), weight_decay=0.01)
                  for name, m in models.items()}

    def main_logits(out):
        return out[0] if isinstance(out, (list, tuple)) else out

    def infer(name: str) -> Callable[[], None]:
        def run():
            with paddle.no_grad():
                main_logits(models[name](x)).numpy()  # .numpy() waits for the result
        return run

    def train_step(name: str) -> Callable[[], None]:
        def run():
            logits = main_logits(models[name](x))
            loss = F.cross_entropy(logits, label, axis=1)
            loss.backward()
            optimizers[name].step()
            optimizers[name].clear_grad()
            float(loss)
        return run

    with paddle.no_grad():
        for m in models.values():
            m.eval()
        diff = float((main_logits(ours(x)) - main_logits(ref(x))).abs().max())
        diff_unfolded = float((models["segkit_unfolded"](x) - main_logits(ref(x))).abs().max())

    results = {}
    phases = (("inference (eval, no_grad)", infer, False), ("train step (fwd+bwd+AdamW)", train_step, True))
    for phase, make, training in phases:
        for m in models.values():
            m.train(training)
        timings = {name: [] for name in models}
        for _ in range(args.warmup):
            for name in models:
                make(name)()
        for _ in range(args.runs):
            for name in models:
                timings[name].append(timed_ms(make(name)))
        results[phase] = {name: statistics.median(t) for name, t in timings.items()}

    print(f"SegFormer-{variant}, {args.batch}x3x{args.size}x{args.size}, {args.classes} classes, "
          f"paddle {paddle.__version__} on CPU, {threads} threads, median of {args.runs} runs after {args.warmup} warm-up "
          "(implementations interleaved)")
    print(f"max |segkit - paddleseg| eval logits: {diff:.2e} (unfolded decoder: {diff_unfolded:.2e})")
    print(f"{'phase':28s} {'segkit ms':>10s} {'paddleseg ms':>13s} {'speed-up':>9s} {'segkit unfolded ms':>19s}")
    for phase, row in results.items():
        print(f"{phase:28s} {row['segkit']:10.1f} {row['paddleseg']:13.1f} "
              f"{row['paddleseg'] / row['segkit']:8.2f}x {row['segkit_unfolded']:19.1f}")
    paper = analytic_gmacs(args.variant, args.size, args.size, args.classes, folded=False)
    folded = analytic_gmacs(args.variant, args.size, args.size, args.classes, folded=True)
    print(f"GMACs (conv+linear+attention matmuls): textbook decoder {paper:.2f} (PaddleSeg), "
          f"folded decoder {folded:.2f} (segkit)")


if __name__ == "__main__":
    main()
