"""Export a trained model for inference with a dynamic batch dimension.

    python tools/export.py --config configs/rtformer/rtformer_slim_cityscapes_1024x512_120k.yml \
        --model_path output/best_model/model.pdparams --save_dir output/inference_model \
        --input_shape -1 3 512 1024
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from segkit.errors import SegkitError  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="the model's YAML config")
    parser.add_argument("--model_path", help="trained weights (model.pdparams, folder, URL or zip)")
    parser.add_argument("--save_dir", default="output/inference_model", help="output folder")
    parser.add_argument("--input_shape", nargs=4, type=int, default=[-1, 3, -1, -1], metavar=("N", "C", "H", "W"),
                        help="input shape; -1 leaves a dimension dynamic (default: -1 3 -1 -1)")
    parser.add_argument("--output_op", choices=["argmax", "softmax", "none"], default="argmax",
                        help="what the exported program returns (default: argmax label map)")
    parser.add_argument("--opts", nargs="+", default=[], help="config overrides, key=value")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from segkit.weights import load_weights, read_state_dict
    from segkit.config import load_config
    from segkit.engine.export import export_model

    try:
        cfg = load_config(args.config, args.opts)
        model = cfg.build_model()
        if args.model_path:
            load_weights(model, read_state_dict(args.model_path), source=args.model_path)
        else:
            print("warning: no --model_path given; exporting the initial (untrained) weights", file=sys.stderr)
        section = cfg.data.get("export") or cfg.data.get("val_dataset") or {}
        prefix = export_model(model, args.save_dir, args.input_shape, args.output_op, section.get("transforms", []))
    except SegkitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"exported {type(model).__name__} to {prefix}.* (deploy.yaml in {args.save_dir})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
