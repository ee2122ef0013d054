"""Convert upstream weights (a PyTorch .pth, a NumPy .npz or a Paddle .pdparams) into a segkit .pdparams.

The named segkit model or backbone is built, the file is translated by its own
``remap_checkpoint_keys`` (for HRViT: official PyTorch names and layouts -> segkit) and loaded
strictly, and the layer's state dict is saved, so the output loads with no further step.

Examples:
    python tools/convert_weights.py hrvit_b1_imagenet.pth hrvit_b1_backbone.pdparams --model HRViT_b1 \
        --allow_unexpected head   # the ImageNet classifier
    python tools/convert_weights.py seg_ade.pth hrvit_b1_ade.pdparams --model hrvit_b1 --num_classes 150

A .pth in PyTorch's zip format (torch >= 1.6) is read without PyTorch by
``segkit.weights.torch_pickle.read_torch_zip``, which never runs code from the file.
"""

import argparse
import inspect
import os
from typing import Dict, List, Optional

import numpy as np
import paddle
from _common import run_cli

import segkit.models  # noqa: F401  (registers every model and backbone)
from segkit.errors import ConfigError
from segkit.registry import BACKBONES, MODELS, did_you_mean
from segkit.weights import load_weights, read_state_dict


def read_weights(path: str) -> Dict[str, np.ndarray]:
    """Name -> array from a .npz (numeric entries only), or anything ``read_state_dict`` reads (.pth included)."""
    if path.endswith(".npz"):
        with np.load(path, allow_pickle=False) as archive:
            return {k: archive[k] for k in archive.files if np.issubdtype(archive[k].dtype, np.number)}
    return read_state_dict(path)


def build_layer(name: str, num_classes: Optional[int]) -> paddle.nn.Layer:
    """A model (from MODELS, needs ``num_classes``) or a backbone (from BACKBONES) by registered name."""
    if name in MODELS:
        if "num_classes" in inspect.signature(MODELS.get(name)).parameters:
            if num_classes is None:
                raise ConfigError(f"--model {name} is a segmentation model: give --num_classes too.")
            return MODELS.get(name)(num_classes=num_classes)
        return MODELS.get(name)()
    if name in BACKBONES:
        return BACKBONES.get(name)()
    every = MODELS.names() + BACKBONES.names()
    raise ConfigError(f"--model: unknown model or backbone {name!r}.{did_you_mean(name, every)}")


def convert(src: str, dst: str, model: str, num_classes: Optional[int] = None, allow_unexpected: List[str] = ()) -> str:
    """Convert ``src`` for the segkit layer ``model`` and save it to ``dst``; returns the load summary."""
    layer = build_layer(model, num_classes)
    state = {k: (v.astype("float32") if v.dtype == np.float16 else v) for k, v in read_weights(src).items()}
    report = load_weights(layer, state, source=src, allow_unexpected=allow_unexpected)
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    paddle.save(layer.state_dict(), dst)
    return report.summary(len(layer.state_dict()))


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", help="upstream weights: .pth/.pt (zip format, read without PyTorch), .npz or .pdparams")
    parser.add_argument("dst", help="output .pdparams")
    parser.add_argument("--model", required=True, help="registered model or backbone name, e.g. hrvit_b1 or HRViT_b1")
    parser.add_argument("--num_classes", type=int, default=None, help="classes, for a segmentation model")
    parser.add_argument(
        "--allow_unexpected", nargs="*", default=[],
        help="key prefixes of the source to drop (e.g. head for an ImageNet classifier)",
    )
    args = parser.parse_args(argv)
    summary = convert(args.src, args.dst, args.model, args.num_classes, args.allow_unexpected)
    print(f"{args.src} -> {args.dst}: {summary}")
    return 0


if __name__ == "__main__":
    run_cli(main)
