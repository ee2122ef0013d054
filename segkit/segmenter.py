"""``Segmenter``: the Python API for deployment and scripting, on the same code path as the tools.

    from segkit import Segmenter
    seg = Segmenter("output/inference_model")                      # an export folder (Paddle Inference)
    seg = Segmenter("output/inference_model", backend="onnxruntime")  # or "openvino"
    seg = Segmenter("configs/my.yml", "output/best_model")           # a config and weights (dygraph)
    labels = seg("image.jpg")                                         # [H, W] class ids at the image's size
    labels, probs = seg(image_rgb_array, return_probabilities=True)   # probs: [K, H, W]

With a config, prediction is ``predict.py``'s (``segkit.engine.inference.predict_classes``, the
config's ``test_config`` for slide / multi-scale inference). With an export folder the transforms
come from ``deploy.yaml`` and the program runs in the chosen backend (``tools/infer.py`` uses this
class); its logits are mapped back to the image as ``predict.py`` maps the dygraph logits.
"""

import os
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

ImageInput = Union[str, np.ndarray]


class Segmenter:
    """Semantic segmentation of images by a trained model, from a config + weights or an export folder.

    Args:
        config_or_export: a YAML config (then ``weights`` is required) or a ``tools/export.py`` folder.
        weights: model.pdparams, a checkpoint folder, a URL or a zip (config only).
        backend: for an export folder, 'paddle' (Paddle Inference), 'onnxruntime' or 'openvino' (CPU).
        device: 'cpu' or 'gpu'.
        cpu_threads: compute threads on the CPU (exports; None: the runtime's default).
        use_trt: TensorRT on the GPU (exports).
        precision: 'fp32' or 'fp16' (fp16 with TensorRT).
        seed: seed of the model's fixed random parts (config only; an export has its own).
        opts: config overrides, ``key=value`` strings (config only).

    Images are file paths or HxWx3 uint8 arrays in RGB order (``segkit.transforms.read_image``).
    """

    def __init__(self, config_or_export: str, weights: Optional[str] = None, backend: str = "paddle",
                 device: str = "cpu", cpu_threads: Optional[int] = None, use_trt: bool = False,
                 precision: str = "fp32", seed: int = 0, opts: Sequence[str] = ()):
        from segkit.engine.backends import RuntimeOptions

        self.options = RuntimeOptions(backend, device, cpu_threads, use_trt, precision).check()
        if os.path.isdir(config_or_export):
            if weights:
                raise ValueError("Segmenter: an export folder carries its weights; do not pass weights.")
            self._init_export(config_or_export, None)
        else:
            if not weights:
                raise ValueError(f"Segmenter({config_or_export!r}): a config needs weights (model.pdparams or a folder).")
            self._init_dygraph(config_or_export, weights, seed, list(opts))

    @classmethod
    def from_export(cls, export_dir: str, options, deploy: Optional[Dict[str, Any]] = None) -> "Segmenter":
        """A Segmenter of an export folder with full ``segkit.engine.backends.RuntimeOptions``
        (oneDNN switch, TensorRT shape ranges), as ``tools/infer.py`` builds it."""
        segmenter = cls.__new__(cls)
        segmenter.options = options.check()
        segmenter._init_export(export_dir, deploy)
        return segmenter

    def _init_export(self, export_dir: str, deploy: Optional[Dict[str, Any]]) -> None:
        from segkit.datasets.base import build_transforms
        from segkit.engine.backends import create_backend, read_deploy_yaml
        from segkit.transforms import Compose

        deploy = deploy if deploy is not None else read_deploy_yaml(export_dir)
        self.deploy: Dict[str, Any] = deploy
        self.transforms = Compose(build_transforms(deploy.get("transforms") or [], "deploy.yaml"))
        self.backend = create_backend(export_dir, self.options, deploy)
        self.output_op = deploy.get("output_op", "argmax")
        self.num_classes = deploy.get("num_classes")
        self.model = None

    def _init_dygraph(self, config: str, weights: str, seed: int, opts: List[str]) -> None:
        from segkit.config import INFERENCE_SECTIONS, load_config
        from segkit.models.base import seed_inference
        from segkit.weights import WeightsSpec, apply_weights

        cfg = load_config(config, opts, sections=INFERENCE_SECTIONS)
        self.model = cfg.build_model(pretrained=False)
        apply_weights(self.model, WeightsSpec(weights))
        self.model.eval()
        seed_inference(self.model, seed)
        self.transforms = cfg.build_transforms("val")
        self.test_config = cfg.test_config()
        self.num_classes = cfg.num_classes()
        self.backend, self.output_op = None, "none"

    # ------------------------------------------------------------------ the three stages

    def preprocess(self, image: ImageInput) -> Tuple[np.ndarray, list]:
        """The network input [3, H, W] float32 of one image and its geometry records (``trans_info``)."""
        data = self.transforms({"img": image, "trans_info": []})
        return data["img"], data["trans_info"]

    def run(self, batch: np.ndarray) -> np.ndarray:
        """The exported program's output for a [N, 3, H, W] batch (export folders only)."""
        if self.backend is None:
            raise ValueError("Segmenter.run: only for export folders; use predict() with a config.")
        return self.backend.run(batch)

    def postprocess(self, output: np.ndarray, trans_info: list,
                    return_probabilities: bool = False) -> Union[np.ndarray, Tuple[np.ndarray, np.ndarray]]:
        """One image's program output ([K, h, w] logits / probabilities, or [1, h, w] ids) mapped back
        to the image: the [H, W] class map, and on request the [K, H, W] probabilities."""
        import paddle
        import paddle.nn.functional as F

        from segkit.engine.class_map import exact_class_map
        from segkit.transforms.compose import reverse_stages, reverse_transform

        tensor = paddle.to_tensor(output[None])
        if self.output_op == "argmax":
            if return_probabilities:
                raise ValueError("this export returns class ids only (output_op argmax); export with "
                                 "--output_op none or softmax for probabilities.")
            return reverse_transform(tensor, trans_info, mode="nearest")[0, 0].numpy()
        finish = lambda t: reverse_transform(t, trans_info, mode="bilinear")  # noqa: E731
        labels = exact_class_map(tensor, finish, reverse_stages(trans_info, tensor.shape[-2:]))
        if not return_probabilities:
            return labels
        full = finish(tensor)
        probs = full if self.output_op == "softmax" else F.softmax(full, axis=1)
        return labels, probs[0].numpy()

    # ------------------------------------------------------------------ whole predictions

    def predict(self, image: ImageInput, return_probabilities: bool = False):
        """The [H, W] class map of one image (and its [K, H, W] probabilities on request)."""
        if self.model is not None:
            return self._predict_dygraph(image, return_probabilities)
        x, info = self.preprocess(image)
        return self.postprocess(self.run(x[None])[0], info, return_probabilities)

    __call__ = predict

    def predict_batch(self, images: Sequence[ImageInput]) -> List[np.ndarray]:
        """Class maps of several images; with an export, images of one network-input size run as one batch."""
        if self.model is not None:
            return [self._predict_dygraph(image, False) for image in images]
        inputs = [self.preprocess(image) for image in images]
        results: List[Optional[np.ndarray]] = [None] * len(inputs)
        for indices in group_by_shape([x.shape for x, _ in inputs]):
            outputs = self.run(np.stack([inputs[i][0] for i in indices]))
            for i, out in zip(indices, outputs):
                results[i] = self.postprocess(out, inputs[i][1])
        return results

    def _predict_dygraph(self, image: ImageInput, return_probabilities: bool):
        import paddle
        import paddle.nn.functional as F

        from segkit.engine.inference import infer_image, predict_classes

        x, info = self.preprocess(image)
        tensor = paddle.to_tensor(x[None])
        labels = predict_classes(self.model, tensor, info, self.test_config)
        if not return_probabilities:
            return labels
        logits = infer_image(self.model, tensor, info, self.test_config)
        probs = logits / logits.sum(axis=1, keepdim=True) if self.test_config.aug_eval else F.softmax(logits, axis=1)
        return labels, probs[0].numpy()


def group_by_shape(shapes: Sequence[Tuple[int, ...]]) -> List[List[int]]:
    """Indices grouped by equal shape, in first-seen order (a batch needs one input size)."""
    groups: Dict[Tuple[int, ...], List[int]] = {}
    for i, shape in enumerate(shapes):
        groups.setdefault(tuple(shape), []).append(i)
    return list(groups.values())
