"""Run an exported model (tools/export.py) on images with Paddle Inference, ONNX Runtime or OpenVINO.

    python tools/infer.py --model_dir output/inference_model --image_path images/ --save_dir output/infer
    python tools/infer.py --model_dir output/inference_model --image_path images/ --backend onnxruntime --benchmark

Writes what predict.py writes (pseudo_color_prediction/, added_prediction/), from the same
transforms (deploy.yaml) and the same mapping back to each image.
"""

import argparse
import os
import time

import numpy as np
from _common import run_cli

from segkit.engine.backends import BACKENDS, DeployError, read_deploy_yaml
from segkit.engine.predict import Prediction, PredictionWriter, collect_images
from segkit.logger import logger
from segkit.progress import track
from segkit.segmenter import Segmenter, group_by_shape
from segkit.visualize import palette_array, parse_custom_color


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_dir", help="the export folder (deploy.yaml, model.json / model.onnx)")
    parser.add_argument("--config", help="PaddleSeg's habit: the export's deploy.yaml (instead of --model_dir)")
    parser.add_argument("--image_path", required=True, help="an image, a folder of images, or a .txt list of images")
    parser.add_argument("--save_dir", default="output/infer", help="where the predictions go")
    parser.add_argument("--backend", choices=BACKENDS, default="paddle",
                        help="paddle (Paddle Inference), onnxruntime or openvino (CPU; both read model.onnx)")
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--batch_size", type=int, default=1, help="images per run (images of one input size)")
    parser.add_argument("--cpu_threads", type=int, default=None, help="compute threads on the CPU")
    parser.add_argument("--no_onednn", action="store_true", help="Paddle Inference on the CPU without oneDNN")
    parser.add_argument("--ort_spinning", action="store_true",
                        help="ONNX Runtime's idle threads spin (its own default; off here: slower on a shared CPU)")
    parser.add_argument("--use_trt", action="store_true", help="TensorRT (with --device gpu)")
    parser.add_argument("--precision", choices=["fp32", "fp16"], default="fp32", help="fp16 with --use_trt")
    for name, default in (("min", "1 3 64 64"), ("opt", "1 3 512 1024"), ("max", "1 3 2048 2048")):
        parser.add_argument(f"--trt_{name}_shape", type=int, nargs=4, metavar=("N", "C", "H", "W"),
                            help=f"TensorRT dynamic-shape range, {name} (default {default})")
    parser.add_argument("--custom_color", type=int, nargs="+", help="palette as r g b per class")
    parser.add_argument("--benchmark", action="store_true",
                        help="time preprocessing, inference and postprocessing (p50/p90, images/s); writes nothing")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs before --benchmark timing")
    parser.add_argument("--repeats", type=int, default=10, help="timed passes over the images with --benchmark")
    args = parser.parse_args(argv)
    if bool(args.model_dir) == bool(args.config):
        parser.error("give the export folder as --model_dir DIR (or its deploy.yaml as --config), exactly one of them")
    args.model_dir = args.model_dir or os.path.dirname(os.path.abspath(args.config))
    if args.batch_size < 1:
        parser.error(f"--batch_size {args.batch_size}: expected at least 1")
    return args


def runtime_options_from_args(args):
    """RuntimeOptions built from the flags (TensorRT shapes included)."""
    from segkit.engine.backends import RuntimeOptions

    shapes = None
    if any((args.trt_min_shape, args.trt_opt_shape, args.trt_max_shape)):
        shapes = {"min": args.trt_min_shape or [1, 3, 64, 64], "opt": args.trt_opt_shape or [1, 3, 512, 1024],
                  "max": args.trt_max_shape or [1, 3, 2048, 2048]}
    return RuntimeOptions(args.backend, args.device, args.cpu_threads, args.use_trt, args.precision,
                          use_onednn=not args.no_onednn, trt_shapes=shapes, ort_spinning=args.ort_spinning)


def batches(items, size):
    """Consecutive chunks of ``items`` of at most ``size``."""
    for start in range(0, len(items), size):
        yield items[start:start + size]


def predict_chunk(segmenter: Segmenter, paths):
    """Class maps of a chunk of images; returns them and the (pre, infer, post) seconds."""
    t0 = time.perf_counter()
    inputs = [segmenter.preprocess(p) for p in paths]
    t1 = time.perf_counter()
    outputs = [None] * len(paths)
    for indices in group_by_shape([x.shape for x, _ in inputs]):
        for i, out in zip(indices, segmenter.run(np.stack([inputs[i][0] for i in indices]))):
            outputs[i] = out
    t2 = time.perf_counter()
    labels = [segmenter.postprocess(out, info) for out, (_, info) in zip(outputs, inputs)]
    return labels, (t1 - t0, t2 - t1, time.perf_counter() - t2)


def benchmark(segmenter: Segmenter, images, args) -> None:
    """Warm up, then time every chunk over ``--repeats`` passes; print p50/p90 latency and throughput."""
    chunks = list(batches(images, args.batch_size))
    for _ in range(args.warmup):
        predict_chunk(segmenter, chunks[0])
    timings = [predict_chunk(segmenter, chunk)[1] for _ in range(args.repeats) for chunk in chunks]
    pre, infer, post = (np.array(t) for t in zip(*timings))
    total = pre + infer + post
    count = args.repeats * len(images)
    print(f"benchmark: {args.backend} ({segmenter.backend.mode}), device {args.device}, batch {args.batch_size}, "
          f"{len(images)} images x {args.repeats} passes after {args.warmup} warm-up runs")
    print("| stage | p50 ms / batch | p90 ms / batch | mean ms / image |")
    print("|---|---|---|---|")
    for name, values in (("preprocess", pre), ("inference", infer), ("postprocess", post), ("total", total)):
        print(f"| {name} | {1e3 * np.percentile(values, 50):.1f} | {1e3 * np.percentile(values, 90):.1f} | "
              f"{1e3 * values.sum() / count:.1f} |")
    print(f"throughput: {count / total.sum():.2f} images/s end to end, {count / infer.sum():.2f} images/s inference only")


def main(argv=None) -> int:
    args = parse_args(argv)
    options = runtime_options_from_args(args)
    deploy = read_deploy_yaml(args.model_dir)
    images, root = collect_images(args.image_path)
    segmenter = Segmenter.from_export(args.model_dir, options, deploy)
    logger.info(f"{args.backend} backend: {segmenter.backend.mode}"
                + (f" (fell back after: {'; '.join(segmenter.backend.failures)})" if getattr(segmenter.backend, "failures", None) else ""))
    if args.benchmark:
        benchmark(segmenter, images, args)
        return 0
    num_classes = deploy.get("num_classes")
    try:
        colours = parse_custom_color(args.custom_color, num_classes or 0) if args.custom_color else deploy.get("palette")
    except ValueError as exc:
        raise DeployError(str(exc)) from exc
    writer = None
    for chunk in track(list(batches(images, args.batch_size)), desc="[INFER]", unit="batch"):
        labels, _ = predict_chunk(segmenter, chunk)
        for path, label in zip(chunk, labels):
            k = num_classes or int(label.max()) + 1
            if writer is None:
                from segkit.datasets.base import default_palette

                writer = PredictionWriter(args.save_dir, root, palette_array(colours or default_palette(k), k),
                                          deploy.get("class_names"))
            writer.write(Prediction(path, label.astype(np.uint8), k))
    logger.info(f"{len(images)} predictions written to {os.path.abspath(args.save_dir)}")
    return 0


if __name__ == "__main__":
    run_cli(main)
