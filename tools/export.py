"""Export a trained model for inference (Paddle program, optionally ONNX) with dynamic batch, height and width.

    python tools/export.py --config configs/rtformer/rtformer_slim_cityscapes_1024x512_120k.yml \
        --model_path output/best_model/model.pdparams --save_dir output/inference_model --format onnx
"""

import argparse
import sys

from _common import add_config_args, add_runtime_args, apply_runtime, run_cli

from segkit.config import INFERENCE_SECTIONS, load_config
from segkit.engine.export import export_model, update_deploy_yaml
from segkit.models.base import seed_inference
from segkit.weights import WeightsSpec, apply_weights


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--model_path", help="trained weights (model.pdparams, folder, URL or zip)")
    parser.add_argument("--save_dir", default="output/inference_model", help="output folder")
    parser.add_argument("--input_shape", nargs=4, type=int, default=[-1, 3, -1, -1], metavar=("N", "C", "H", "W"),
                        help="input shape; -1 leaves a dimension dynamic (default: -1 3 -1 -1)")
    parser.add_argument("--output_op", choices=["argmax", "softmax", "none"], default="argmax",
                        help="what the exported program returns (default: argmax label map)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the fixed random parts (SegNeXt's NMF bases), as val.py / predict.py --seed")
    add_runtime_args(parser)
    parser.add_argument("--format", choices=["paddle", "onnx"], default="paddle",
                        help="paddle: the Paddle Inference program; onnx: that program and model.onnx (paddle2onnx), "
                             "checked against the dygraph model before the command returns")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    parser.add_argument("--no_simplify", action="store_true", help="keep paddle2onnx's graph (no onnxslim / onnxsim)")
    return parser.parse_args(argv)


def export_onnx(model, args) -> None:
    """model.onnx next to the Paddle program, checked against dygraph at two sizes (a mismatch raises)."""
    from segkit.engine.onnx_export import check_onnx, convert_to_onnx

    path = convert_to_onnx(args.save_dir, args.opset, simplify=not args.no_simplify)
    for result in check_onnx(model, path, args.input_shape, args.output_op):
        print(f"ONNX check against dygraph, {result.line()}")
    update_deploy_yaml(args.save_dir, onnx_model="model.onnx", opset=args.opset)


def main(argv=None) -> int:
    args = parse_args(argv)
    apply_runtime(args)
    cfg = load_config(args.config, args.opts, sections=INFERENCE_SECTIONS)
    model = cfg.build_model(pretrained=not args.model_path)
    if args.model_path:
        apply_weights(model, WeightsSpec(args.model_path))
    else:
        print("warning: no --model_path given; exporting the initial (untrained) weights", file=sys.stderr)
    model.eval()
    seed_inference(model, args.seed)
    prefix = export_model(model, args.save_dir, args.input_shape, args.output_op, cfg.export_transforms())
    update_deploy_yaml(args.save_dir, seed=args.seed, num_classes=cfg.num_classes(), class_names=cfg.class_names(),
                       palette=[list(map(int, c)) for c in cfg.palette()[:cfg.num_classes()]])
    if args.format == "onnx":
        export_onnx(model, args)
    print(f"exported {type(model).__name__} to {prefix}.*{' and model.onnx' if args.format == 'onnx' else ''} "
          f"(deploy.yaml in {args.save_dir})")
    return 0


if __name__ == "__main__":
    run_cli(main)
