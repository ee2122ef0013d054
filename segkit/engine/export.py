"""Export a model as a static inference program (``model.json``/``model.pdmodel`` + ``model.pdiparams``).

The program is traced with ``paddle.jit.to_static`` from an ``InputSpec`` whose unknown
dimensions (``None`` or ``-1``) stay dynamic, so one export serves any batch size (and, if asked,
any image size). A ``deploy.yaml`` next to it records the input shape, the output op and the
preprocessing transforms, in PaddleSeg's deploy format.

With the argmax output op, a segkit model is traced at its head's resolution
(``segkit.models.base.head_resolution``) and the program resizes only the classes that can win
somewhere (``segkit.engine.class_map.exact_argmax``): the same class map as resizing every class
and taking the argmax, bit for bit, in every backend.
"""

import contextlib
import os
from typing import Any, Dict, List, Optional, Sequence

import paddle
import yaml
from paddle import nn

from segkit.engine.class_map import exact_argmax
from segkit.errors import SegkitError
from segkit.models.base import SegModel, head_resolution

OUTPUT_OPS = ("argmax", "softmax", "none")


class ExportError(SegkitError):
    """A model or an input shape that cannot be exported."""


class InferenceNet(nn.Layer):
    """Wraps a segmentation model for deployment: eval-mode main logits, then the output op.

    Args:
        model: the segmentation model (its eval forward returns the main logits).
        output_op: 'argmax' (int32 label map [N, 1, H, W]), 'softmax' (probabilities) or 'none' (logits).
        fast_argmax: with 'argmax' and a ``SegModel``, resize only the classes that can win (the
            same class map); the model must then be traced inside ``head_resolution(model)``.
    """

    def __init__(self, model: nn.Layer, output_op: str = "argmax", fast_argmax: bool = True):
        super().__init__()
        self.model = model
        self.output_op = output_op
        self.fast_argmax = fast_argmax and output_op == "argmax" and isinstance(model, SegModel)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        logits = self.model(x)
        if isinstance(logits, (list, tuple)):  # a model without the eval contract: main logits first
            logits = logits[0]
        if self.fast_argmax:  # head-resolution logits: the model's final resize, on the candidates only
            return exact_argmax(logits, x.shape[-2:], self.model.output_align_corners)
        if self.output_op == "argmax":
            return paddle.argmax(logits, axis=1, keepdim=True, dtype="int32")
        if self.output_op == "softmax":
            return nn.functional.softmax(logits, axis=1)
        return logits


def check_input_shape(input_shape: Sequence[Optional[int]]) -> List[Optional[int]]:
    """Normalise ``[N, C, H, W]`` (None or -1 = dynamic) and reject shapes that cannot be traced."""
    shape = [None if dim is None or dim == -1 else dim for dim in input_shape]
    if len(shape) != 4 or any(dim is not None and (not isinstance(dim, int) or dim <= 0) for dim in shape):
        raise ExportError(
            f"input_shape must be [N, C, H, W] with positive integers or -1/None for a dynamic size, "
            f"got {list(input_shape)}. Example: --input_shape -1 3 512 1024."
        )
    if shape[1] is None:
        raise ExportError(f"input_shape {list(input_shape)}: the channel count must be fixed (e.g. 3).")
    return shape


def export_model(
    model: nn.Layer,
    save_dir: str,
    input_shape: Sequence[Optional[int]] = (None, 3, None, None),
    output_op: str = "argmax",
    transforms: Optional[List[Dict[str, Any]]] = None,
    fast_argmax: bool = True,
) -> str:
    """Trace ``model`` into a static program saved under ``save_dir``; return the path prefix.

    Args:
        model: the segmentation model with its trained weights loaded.
        save_dir: output folder (created); receives ``model.*``, ``model.pdiparams`` and ``deploy.yaml``.
        input_shape: ``[N, C, H, W]``; None or -1 leaves a dimension dynamic. The batch is dynamic by default.
        output_op: 'argmax', 'softmax' or 'none' (raw logits).
        transforms: the preprocessing transforms (config dicts) to record in ``deploy.yaml``.
        fast_argmax: with 'argmax', resize only the classes that can win (the same class map, see
            the module docstring); False keeps the former graph that resizes every class (to compare).

    Raises:
        ExportError: for a bad ``input_shape`` / ``output_op``, or when tracing fails (the message
            carries Paddle's error and the usual fix).
    """
    shape = check_input_shape(input_shape)
    if output_op not in OUTPUT_OPS:
        raise ExportError(f"output_op must be one of {', '.join(OUTPUT_OPS)}, got {output_op!r}.")
    net = InferenceNet(model, output_op, fast_argmax)
    net.eval()
    os.makedirs(save_dir, exist_ok=True)
    prefix = os.path.join(save_dir, "model")
    spec = [paddle.static.InputSpec(shape=shape, dtype="float32", name="x")]
    try:
        with head_resolution(model) if net.fast_argmax else contextlib.nullcontext():
            paddle.jit.save(paddle.jit.to_static(net, input_spec=spec, full_graph=True), prefix)
    except Exception as exc:  # Paddle raises many types while tracing
        raise ExportError(
            f"could not export {type(model).__name__} with input_shape {shape}: {type(exc).__name__}: {exc}\n"
            "If the model needs a fixed size along a dimension (some reshape by batch or by image size), "
            "give it explicitly, e.g. --input_shape 1 3 512 1024."
        ) from exc
    write_deploy_yaml(save_dir, shape, output_op, transforms or [])
    return prefix


def write_deploy_yaml(save_dir: str, shape: List[Optional[int]], output_op: str,
                      transforms: List[Dict[str, Any]]) -> None:
    """Write ``deploy.yaml`` (PaddleSeg's deploy schema) describing the exported program."""
    model_file = "model.json" if os.path.exists(os.path.join(save_dir, "model.json")) else "model.pdmodel"
    deploy = {
        "Deploy": {
            "model": model_file,
            "params": "model.pdiparams",
            "transforms": transforms,
            "input_shape": [-1 if dim is None else dim for dim in shape],
            "output_op": output_op,
            "output_dtype": "int32" if output_op == "argmax" else "float32",
        }
    }
    with open(os.path.join(save_dir, "deploy.yaml"), "w", encoding="utf-8") as f:
        yaml.safe_dump(deploy, f, sort_keys=False)


def update_deploy_yaml(save_dir: str, **fields: Any) -> None:
    """Add ``fields`` to the ``Deploy`` section of ``save_dir/deploy.yaml``."""
    path = os.path.join(save_dir, "deploy.yaml")
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    data["Deploy"].update(fields)
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(data, f, sort_keys=False)
