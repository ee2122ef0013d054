"""Multiply-accumulates and parameters of a config's model, per part and in total.

    python tools/analyze_model.py --config configs/segformer/segformer_b0_ade20k_512x512_160k.yml --input_shape 1 3 512 512

Counts one forward pass on zeros (``segkit.complexity``): convs, linears and matrix products,
attention included; norms, activations and resizes are not counted. No weights are loaded (the
config's ``pretrained`` keys are ignored): the count depends on the architecture only.
"""

import argparse

from _common import add_config_args, run_cli

from segkit.complexity import count_macs, format_count
from segkit.config import load_config
from segkit.errors import ConfigError


def _drop_pretrained(section):
    """The model section without ``pretrained`` keys, at any depth."""
    if isinstance(section, dict):
        return {k: _drop_pretrained(v) for k, v in section.items() if k != "pretrained"}
    if isinstance(section, list):
        return [_drop_pretrained(v) for v in section]
    return section


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_args(parser)
    parser.add_argument("--input_shape", type=int, nargs=4, default=[1, 3, 512, 512], metavar=("N", "C", "H", "W"),
                        help="input batch shape (default 1 3 512 512)")
    parser.add_argument("--depth", type=int, default=3,
                        help="parts are layer names cut to this many dotted parts (default 3: backbone.stages.0)")
    parser.add_argument("--backbone_only", action="store_true", help="count the model's backbone alone")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if min(args.input_shape) < 1 or args.depth < 1:
        raise ConfigError(f"--input_shape {args.input_shape} / --depth {args.depth}: every number must be at least 1.")
    cfg = load_config(args.config, args.opts)
    cfg.data["model"] = _drop_pretrained(cfg.data["model"])
    model = cfg.build_model()
    if args.backbone_only:
        if not hasattr(model, "backbone"):
            raise ConfigError(f"--backbone_only: {type(model).__name__} has no backbone; drop the flag.")
        model = model.backbone
    result = count_macs(model, args.input_shape)
    total_macs = result.total_macs
    print(f"{type(model).__name__}, input {' x '.join(map(str, args.input_shape))}")
    print(f"| part | MACs | share | params |\n|---|---|---|---|")
    for name, macs, params in result.by_layer(args.depth):
        print(f"| {name} | {format_count(macs)} | {macs / max(total_macs, 1):.1%} | {format_count(params)} |")
    print(f"| total | {format_count(total_macs)} | 100% | {format_count(sum(result.params.values()))} |")
    print(f"{total_macs / 1e9:.2f} GMACs ({2 * total_macs / 1e9:.2f} GFLOPs), "
          f"{sum(result.trainable.values()):,} trainable parameters")


if __name__ == "__main__":
    run_cli(main)
