"""Convert upstream weights (PyTorch .pth/.bin, .safetensors, NumPy .npz, Paddle .pdparams) into a segkit .pdparams.

The named segkit model or backbone is built, the file is translated by its own
``remap_checkpoint_keys`` (which recognises the codebase that wrote it: HRViT's official code;
NVlabs, Hugging Face, mmseg 1.x or PaddleSeg for SegFormer; the official code, mmseg 1.x or
PaddleSeg for SegNeXt) and loaded strictly, and the layer's state dict is saved, so the output
loads with no further step.

Examples:
    python tools/convert_weights.py hrvit_b1_imagenet.pth hrvit_b1_backbone.pdparams --backbone hrvit_b1 \
        --allow_unexpected head   # the ImageNet classifier
    python tools/convert_weights.py seg_ade.pth hrvit_b1_ade.pdparams --model hrvit_b1 --num_classes 150
    python tools/convert_weights.py segformer-b0-finetuned-ade-512-512/ b0_ade.pdparams --model segformer_b0 \
        --num_classes 150   # a Hugging Face model folder (model.safetensors)
    python tools/convert_weights.py segformer_mit-b0_512x512_160k_ade20k.pth b0_ade_mmseg.pdparams \
        --model segformer_b0 --num_classes 150 --model_args mmseg_head=true

A .pth in PyTorch's zip format (torch >= 1.6) is read without PyTorch by
``segkit.weights.torch_pickle.read_torch_zip``, which never runs code from the file; a
.safetensors file by the ``safetensors`` package's NumPy reader.
"""

import argparse
import inspect
import os
from typing import Dict, List, Optional

import paddle
import yaml
from _common import run_cli

import segkit.models  # noqa: F401  (registers every model and backbone)
from segkit.config.paddleseg import canonical_backbone
from segkit.errors import ConfigError
from segkit.registry import BACKBONES, MODELS, did_you_mean
from segkit.weights import Tolerance, WeightsSpec, apply_weights


def parse_model_args(items: List[str]) -> Dict[str, object]:
    """``["mmseg_head=true", ...]`` -> ``{"mmseg_head": True, ...}`` (values parsed as YAML)."""
    args = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--model_args: expected KEY=VALUE, got {item!r} (e.g. mmseg_head=true).")
        args[key] = yaml.safe_load(value)
    return args


def build_layer(name: str, num_classes: Optional[int], model_args: Optional[Dict[str, object]] = None,
                backbone: bool = False) -> paddle.nn.Layer:
    """A model (from MODELS, needs ``num_classes``) or a backbone (from BACKBONES) by registered name.

    Args:
        name: a model name; else (or with ``backbone``) a backbone name or its PaddleSeg alias.
        num_classes: classes, for a model.
        model_args: further keyword arguments of the model or backbone.
        backbone: look ``name`` up among the backbones only (``hrvit_b1`` names a model and a backbone).
    """
    model_args = dict(model_args or {})
    if backbone:
        return _call(BACKBONES.get(canonical_backbone(name), where="--backbone"), name, model_args)
    if name in MODELS:
        if "num_classes" in inspect.signature(MODELS.get(name)).parameters:
            if num_classes is None:
                raise ConfigError(f"--model {name} is a segmentation model: give --num_classes too.")
            model_args["num_classes"] = num_classes
        return _call(MODELS.get(name), name, model_args)
    if canonical_backbone(name) in BACKBONES:
        return _call(BACKBONES.get(canonical_backbone(name)), name, model_args)
    every = MODELS.names() + BACKBONES.names()
    raise ConfigError(f"--model: unknown model or backbone {name!r}.{did_you_mean(name, every)}")


def _call(builder, name: str, kwargs: Dict[str, object]) -> paddle.nn.Layer:
    """``builder(**kwargs)``, an unknown argument reported with the ones ``name`` takes."""
    accepted = list(inspect.signature(builder).parameters)
    unknown = [k for k in kwargs if k not in accepted]
    if unknown:
        raise ConfigError(f"--model_args: {name} takes no argument {unknown[0]!r}; it takes {', '.join(accepted)}.")
    return builder(**kwargs)


def convert(src: str, dst: str, model: str, num_classes: Optional[int] = None, allow_unexpected: List[str] = (),
            model_args: Optional[Dict[str, object]] = None, backbone: bool = False) -> str:
    """Convert ``src`` for the segkit layer ``model`` and save it to ``dst``; returns the load summary.

    Every tensor is cast to the layer's dtype (float16 files give float32 weights). ``backbone``: ``model``
    names a backbone (see ``build_layer``)."""
    layer = build_layer(model, num_classes, model_args, backbone)
    report = apply_weights(layer, WeightsSpec(src), tolerance=Tolerance(unexpected=tuple(allow_unexpected)))
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    paddle.save(layer.state_dict(), dst)
    return report.summary(len(layer.state_dict()))


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "src", help="upstream weights: .pth/.pt/.bin (zip format, read without PyTorch), .safetensors, .npz, "
        ".pdparams, or a Hugging Face model folder",
    )
    parser.add_argument("dst", help="output .pdparams")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", help="registered model name (or backbone name), e.g. hrvit_b1 or segformer_b0")
    which.add_argument("--backbone", help="registered backbone name, e.g. hrvit_b1 or mit_b0")
    parser.add_argument("--num_classes", type=int, default=None, help="classes, for a segmentation model")
    parser.add_argument(
        "--allow_unexpected", nargs="*", default=[],
        help="key prefixes of the source to drop (e.g. head for an ImageNet classifier)",
    )
    parser.add_argument(
        "--model_args", nargs="*", default=[], metavar="KEY=VALUE",
        help="further arguments of the model, e.g. mmseg_head=true for an mmseg 1.x SegFormer checkpoint",
    )
    args = parser.parse_args(argv)
    summary = convert(args.src, args.dst, args.model or args.backbone, args.num_classes, args.allow_unexpected,
                      parse_model_args(args.model_args), backbone=args.backbone is not None)
    print(f"{args.src} -> {args.dst}: {summary}")
    return 0


if __name__ == "__main__":
    run_cli(main)
