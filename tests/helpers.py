"""Helpers shared by the test files (import them; do not copy them)."""

import contextlib
import json
import os

import numpy as np
import paddle

from segkit.models.layers import paddle_kernels
from segkit.weights import WeightsSpec, apply_weights

# Parity tests run twice: on Paddle's own kernels, where segkit and PaddleSeg compute the same sums in
# the same order (strict tolerances), and on segkit's oneDNN convolutions, which sum in another order
# (float32 rounding grows through a deep network: tolerances relative to the values' scale).
KERNELS = ("paddle", "onednn")


def kernels(name: str):
    """The context for one of KERNELS: Paddle's own kernels, or segkit's CPU rewrites (the default)."""
    return paddle_kernels() if name == "paddle" else contextlib.nullcontext()


def trainable_count(layer) -> int:
    """The number of trainable parameter values of ``layer``."""
    return sum(int(np.prod(p.shape)) for p in layer.parameters() if not p.stop_gradient)


def shapes_only(build):
    """``build()`` under ``paddle.LazyGuard``: its parameters get their shapes but no drawn initial
    values (the parameter-count tests: drawing a large variant's weights takes seconds)."""
    with paddle.LazyGuard():
        return build()


def train_log(save_dir) -> list:
    """The records of a run's ``train_log.jsonl``, one dict per iteration."""
    with open(os.path.join(save_dir, "train_log.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def with_pretrained(layer, location: str):
    """``layer`` after loading ``location`` as its pretrained weights (as a config's ``pretrained`` does)."""
    apply_weights(layer, WeightsSpec(location, pretrained=True))
    return layer


def first_val_images(scenes_root: str, folder, count: int) -> str:
    """A val file list (in ``folder``) with the first ``count`` images of the embedded val split."""
    path = folder / f"val{count}.txt"
    with open(os.path.join(scenes_root, "val.txt")) as f:
        path.write_text("".join(f.readlines()[:count]))
    return str(path)


def paddle_predictor(save_dir: str):
    """A Paddle Inference predictor on the exported files, as a deployment would run it."""
    from paddle import inference

    config = inference.Config(os.path.join(save_dir, "model.json"), os.path.join(save_dir, "model.pdiparams"))
    config.disable_gpu()
    # Paddle 3.3.1's oneDNN kernels reject bilinear interpolation's scale attribute (any model that
    # resizes bilinearly): run the plain CPU kernels.
    config.disable_mkldnn()
    config.disable_glog_info()
    return inference.create_predictor(config)


def run_predictor(pred, x: np.ndarray) -> np.ndarray:
    """The predictor's first output for input ``x``."""
    handle = pred.get_input_handle(pred.get_input_names()[0])
    handle.reshape(x.shape)
    handle.copy_from_cpu(x)
    pred.run()
    return pred.get_output_handle(pred.get_output_names()[0]).copy_to_cpu()


def randomise_state(model, seed: int, new_value) -> None:
    """Replace the tensors of ``model`` by ``new_value(name, tensor, rng)`` (None leaves one as it is),
    drawn from ``numpy.random.default_rng(seed)`` in state-dict order, so that parity with a reference
    is not checked on default-initialised norms and statistics only."""
    rng = np.random.default_rng(seed)
    for name, tensor in model.state_dict().items():
        value = new_value(name, tensor, rng)
        if value is not None:
            tensor.set_value(np.asarray(value).astype(tensor.numpy().dtype))


def schedule_and_loss(learning_rate: float) -> str:
    """The YAML tail shared by the tests' training configs: linear decay from ``learning_rate``, plain cross-entropy."""
    return f"""lr_scheduler:
  type: PolynomialDecay
  learning_rate: {learning_rate}
  end_lr: 0.0
  power: 1.0
loss:
  types:
    - type: CrossEntropyLoss
  coef: [1]
"""
