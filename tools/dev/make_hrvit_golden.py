"""Regenerate ``tests/data/hrvit_golden.npz`` by running the OFFICIAL HRViT code (PyTorch).

Needs PyTorch, timm and einops and a checkout of facebookresearch/HRViT at commit
6a63b5bc829b711073019cffdcc9beb6e81547a9 (the only commit; the file it runs is ``models/hrvit.py``).
segkit and its tests never import PyTorch; only this script does. Run it from outside the
repository's environment, e.g.::

    git clone https://github.com/facebookresearch/HRViT /tmp/HRViT
    PYTHONPATH=/path/with/einops /path/to/torch-venv/bin/python tools/dev/make_hrvit_golden.py --official /tmp/HRViT

For each variant (b1, b2) it builds the official ``HRViT_b*_224`` in eval mode (batch norm on its
running statistics, no dropout or drop path), lists its parameters and batch-norm buffers (the
ImageNet classifier ``head.*`` and the ``num_batches_tracked`` counters left out) with a kind per
tensor, draws the weights with ``tests/hrvit_golden.draw_weights`` (NumPy, the same function the
tests call), loads them into the official model and runs ``forward_features`` on a standard-normal
input. The input size 96 x 128 is one the official code accepts (ceil(side / 4) a multiple of 8)
and, at the two deepest branches (maps 6 x 8 and 3 x 4, window 7), pads and masks the attention
stripes in both directions. It also reports how far a float64 run of the same model lies from the
stored float32 outputs, i.e. the precision a faithful re-implementation can reach.
"""

import argparse
import importlib.util
import json
import os
import sys

import numpy as np
import torch
from torch import nn

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests"))
import hrvit_golden  # noqa: E402  (tests/hrvit_golden.py: the weight generator)

OFFICIAL_COMMIT = "6a63b5bc829b711073019cffdcc9beb6e81547a9"
INPUT_SHAPE = (1, 3, 96, 128)
SEEDS = {"b1": (0, 1), "b2": (2, 3)}  # variant -> (weight seed, input seed)


def load_official(checkout: str):
    """The official ``models/hrvit.py`` module, imported from a checkout by file path."""
    spec = importlib.util.spec_from_file_location("official_hrvit", os.path.join(checkout, "models", "hrvit.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # timm's register_model looks the module up there
    spec.loader.exec_module(module)
    return module


def tensor_kind(module: nn.Module, name: str) -> str:
    """The generator kind of ``module``'s own tensor ``name`` (weight, bias, running_mean, ...)."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        kinds = {"weight": "bn_weight", "bias": "bn_bias", "running_mean": "bn_mean", "running_var": "bn_var"}
        return kinds.get(name, "counter")  # num_batches_tracked, left out of the spec
    if isinstance(module, nn.LayerNorm):
        return {"weight": "ln_weight", "bias": "ln_bias"}[name]
    return "other"


def weight_spec(model: nn.Module):
    """[(name, shape, kind)] in ``state_dict`` order, without ``head.*`` and ``num_batches_tracked``."""
    kinds = {}
    for prefix, module in model.named_modules():
        for name, _ in list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False)):
            kinds[f"{prefix}.{name}" if prefix else name] = tensor_kind(module, name)
    return [
        (key, list(value.shape), kinds[key])
        for key, value in model.state_dict().items()
        if not key.startswith("head.") and not key.endswith("num_batches_tracked")
    ]


def run_variant(official, variant: str):
    """Golden arrays and metadata of one variant."""
    weight_seed, input_seed = SEEDS[variant]
    model = getattr(official, f"HRViT_{variant}_224")().eval()
    spec = weight_spec(model)
    weights = hrvit_golden.draw_weights(spec, weight_seed)
    missing, unexpected = model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=False)
    assert not unexpected and all(k.startswith("head.") or k.endswith("num_batches_tracked") for k in missing)
    x = np.random.default_rng(input_seed).standard_normal(INPUT_SHAPE).astype("float32")
    with torch.no_grad():
        outs = [o.numpy() for o in model.forward_features(torch.from_numpy(x))]
        outs64 = [o.numpy() for o in model.double().forward_features(torch.from_numpy(x).double())]
    f64_gap = max(float(np.abs(a - b).max()) for a, b in zip(outs, outs64))
    meta = {
        "source": f"facebookresearch/HRViT@{OFFICIAL_COMMIT} models/hrvit.py HRViT_{variant}_224()",
        "function": "forward_features, eval mode", "torch": torch.__version__, "numpy": np.__version__,
        "threads": torch.get_num_threads(), "weight_seed": weight_seed, "input_seed": input_seed,
        "weights_sha256": hrvit_golden.digest(weights), "spec": spec,
        "float64_max_abs_gap": f64_gap, "output_shapes": [list(o.shape) for o in outs],
    }
    arrays = {"input": x, **{f"out{i}": o for i, o in enumerate(outs)}}
    print(f"{variant}: {len(spec)} tensors, outputs {meta['output_shapes']}, "
          f"max |out| {[round(float(np.abs(o).max()), 2) for o in outs]}, float64 gap {f64_gap:.2e}")
    return arrays, meta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", required=True, help="checkout of facebookresearch/HRViT")
    parser.add_argument("--out", default=hrvit_golden.GOLDEN_FILE)
    args = parser.parse_args()
    torch.set_num_threads(1)  # thread count changes float summation order; keep it fixed and recorded
    official = load_official(args.official)
    archive = {}
    for variant in hrvit_golden.VARIANTS:
        arrays, meta = run_variant(official, variant)
        archive.update({f"{variant}_{k}": v for k, v in arrays.items()})
        archive[f"{variant}_meta"] = np.array(json.dumps(meta))
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    np.savez_compressed(args.out, **archive)
    print(f"wrote {args.out} ({os.path.getsize(args.out) / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
