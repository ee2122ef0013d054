"""SegNeXt at inference: fixed seeded NMF bases (segkit's eval, the export) vs per-call random bases (the paper).

    python benchmarks/bench_nmf_bases.py --config configs/segnext/segnext_t_embedded_scenes.yml \
        --model_path output/segnext_scenes/best_model [--seeds 0 1 2]

Evaluates the val split once per seed with the fixed bases (``seed_inference(model, seed)``) and
once per seed with upstream's fresh random bases on every image (``seed_eval_bases(None)`` after
``paddle.seed(seed)``), and prints mIoU / Acc for each run, their spread, and how many pixels the
two modes label differently on the first images.
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import paddle  # noqa: E402

from segkit.config import TestConfig, load_config  # noqa: E402
from segkit.engine.evaluate import evaluate  # noqa: E402
from segkit.engine.inference import predict_classes  # noqa: E402
from segkit.models.base import seed_inference  # noqa: E402
from segkit.weights import WeightsSpec, apply_weights  # noqa: E402


def set_random_bases(model, seed: int) -> None:
    """Upstream's behaviour: fresh bases from Paddle's RNG on every call, the RNG seeded once."""
    paddle.seed(seed)
    for layer in model.sublayers():
        if hasattr(layer, "seed_eval_bases"):
            layer.seed_eval_bases(None)


def label_maps(model, dataset, count: int):
    """Class maps of the first ``count`` val images."""
    maps = []
    for i in range(min(count, len(dataset))):
        sample = dataset[i]
        maps.append(predict_classes(model, paddle.to_tensor(sample["img"][None]), sample.get("trans_info", []),
                                    TestConfig()))
    return maps


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--model_path", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--opts", nargs="+", default=[])
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.opts)
    model = cfg.build_model(pretrained=False)
    apply_weights(model, WeightsSpec(args.model_path))
    model.eval()
    dataset = cfg.build_dataset("val")
    print("| NMF bases in eval | seed | mIoU | Acc |\n|---|---|---|---|")
    scores = {"fixed (segkit, export)": [], "random per image (paper)": []}
    for mode, setup in (("fixed (segkit, export)", seed_inference), ("random per image (paper)", set_random_bases)):
        for seed in args.seeds:
            setup(model, seed)
            result = evaluate(model, dataset, print_detail=False)
            scores[mode].append((result["mIoU"], result["Acc"]))
            print(f"| {mode} | {seed} | {result['mIoU']:.4f} | {result['Acc']:.4f} |", flush=True)
    for mode, values in scores.items():
        miou = np.array([v[0] for v in values])
        print(f"{mode}: mIoU mean {miou.mean():.4f}, range {miou.max() - miou.min():.4f} over seeds {args.seeds}")
    seed_inference(model, args.seeds[0])
    fixed = label_maps(model, dataset, 20)
    set_random_bases(model, args.seeds[0])
    random = label_maps(model, dataset, 20)
    differ = np.mean([(a != b).mean() for a, b in zip(fixed, random)])
    print(f"pixels labelled differently by the two modes (seed {args.seeds[0]}, first {len(fixed)} images): {100 * differ:.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
