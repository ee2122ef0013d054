"""ONNX export: convert an exported Paddle program with paddle2onnx, simplify it, check it against dygraph.

The conversion keeps the program's dynamic dimensions (batch, height, width). The check runs the
ONNX model in ONNX Runtime and the dygraph model on random inputs at two sizes (the second one not a
multiple of 32, batch 2 where the batch is dynamic). The logits are read from the graph even when
it ends in an argmax or a softmax (the input of that last node is exposed as an extra output; in an
exact fast argmax, the head-resolution logits the classes are chosen from, compared with the
dygraph model's inside ``head_resolution``), so the check reports the largest logit difference and
the argmax agreement; a difference above the tolerance is an error (``ExportError``), not a warning.
"""

import contextlib
import dataclasses
import os
import tempfile
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
import paddle
from paddle import nn

from segkit.engine.export import ExportError
from segkit.logger import logger
from segkit.models.base import head_resolution

DEFAULT_OPSET = 17
# Largest logit difference accepted, relative to the largest logit magnitude (at least 1).
RELATIVE_TOLERANCE = 1e-4


@dataclasses.dataclass
class CheckResult:
    """The comparison of the ONNX model with dygraph on one random input."""

    shape: Tuple[int, ...]
    max_abs_diff: float
    scale: float
    argmax_agreement: float

    @property
    def ok(self) -> bool:
        """Logits within the tolerance (relative to their scale)."""
        return self.max_abs_diff <= RELATIVE_TOLERANCE * self.scale

    def line(self) -> str:
        """One printable line."""
        return (f"input {list(self.shape)}: max |logit difference| {self.max_abs_diff:.2e} "
                f"(tolerance {RELATIVE_TOLERANCE * self.scale:.1e}), argmax agreement {100 * self.argmax_agreement:.4f}%")


def convert_to_onnx(save_dir: str, opset: int = DEFAULT_OPSET, simplify: bool = True) -> str:
    """Convert ``save_dir``'s Paddle program to ``save_dir/model.onnx``; return its path.

    Args:
        save_dir: a folder written by ``export_model`` (``model.json`` + ``model.pdiparams``).
        opset: ONNX opset version.
        simplify: run onnxslim (or onnxsim) on the result when one of them is installed.

    Raises:
        ExportError: paddle2onnx is missing or cannot convert the program.
    """
    try:
        import paddle2onnx
    except ImportError as exc:
        raise ExportError("--format onnx needs paddle2onnx and onnxruntime: pip install paddle2onnx onnxruntime "
                          "(the deploy extra, see README).") from exc
    save_dir = os.path.abspath(save_dir)
    model_file = next((os.path.join(save_dir, name) for name in ("model.json", "model.pdmodel")
                       if os.path.isfile(os.path.join(save_dir, name))), None)
    if model_file is None:
        raise ExportError(f"{save_dir}: no Paddle program (model.json / model.pdmodel) to convert.")
    path = os.path.join(save_dir, "model.onnx")
    try:
        with _scratch_working_dir():
            paddle2onnx.export(model_file, os.path.join(save_dir, "model.pdiparams"), path, opset_version=opset,
                               auto_upgrade_opset=False, enable_onnx_checker=True)
    except Exception as exc:  # paddle2onnx raises plain Exceptions from its C++ parser
        raise ExportError(f"paddle2onnx could not convert {model_file} (opset {opset}): {exc}") from exc
    fix_group_norm_epsilon(path, model_file)
    if simplify:
        simplify_onnx(path)
    return path


@contextlib.contextmanager
def _scratch_working_dir() -> Iterator[None]:
    """Run the block in a temporary working directory: paddle2onnx's constant folding (Polygraphy)
    leaves several-MB files named by UUIDs, and a ``sym_shape_infer_temp.onnx``, in the working directory."""
    previous = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="segkit_onnx_") as scratch:
        os.chdir(scratch)
        try:
            yield
        finally:
            os.chdir(previous)


def _program_group_norm_epsilons(model_file: str) -> List[float]:
    """The ``epsilon`` of every group_norm op of a PIR JSON program, in program order."""
    import json

    found = []

    def walk(node):
        if isinstance(node, dict):
            if str(node.get("#", "")).endswith(".group_norm"):
                found.extend(a["AT"]["D"] for a in node.get("A", []) if a.get("N") == "epsilon")
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    if model_file.endswith(".json"):
        with open(model_file, encoding="utf-8") as f:
            walk(json.load(f))
    return found


def fix_group_norm_epsilon(path: str, model_file: str) -> int:
    """Give the InstanceNormalization nodes paddle2onnx makes of GroupNorm their epsilon back.

    paddle2onnx 2.1 writes ``epsilon: 0`` there, so a group of constant values divides by zero
    (NaN) and every other group is normalised slightly differently from Paddle (SegNeXt's head:
    logits off by 0.5 %). The epsilons are taken from the program's group_norm ops, in order.

    Returns:
        The number of nodes changed.
    """
    import onnx

    model = onnx.load(path)
    nodes = [n for n in model.graph.node if n.op_type == "InstanceNormalization"]
    if not nodes:
        return 0
    epsilons = _program_group_norm_epsilons(model_file)
    if len(set(epsilons)) == 1:
        epsilons = epsilons[:1] * len(nodes)
    if len(epsilons) != len(nodes):
        raise ExportError(f"{path}: {len(nodes)} InstanceNormalization nodes but {len(epsilons)} group_norm ops in "
                          f"{model_file}; cannot restore their epsilon (paddle2onnx writes 0).")
    for node, epsilon in zip(nodes, epsilons):
        for attribute in node.attribute:
            if attribute.name == "epsilon":
                attribute.f = float(epsilon)
    onnx.save(model, path)
    return len(nodes)


def simplify_onnx(path: str) -> Optional[str]:
    """Simplify the ONNX file in place with onnxslim, else onnxsim; return the tool used (None if neither)."""
    import onnx

    try:
        import onnxslim

        onnx.save(onnxslim.slim(onnx.load(path)), path)
        return "onnxslim"
    except ImportError:
        pass
    try:
        import onnxsim

        model, ok = onnxsim.simplify(onnx.load(path))
        if ok:
            onnx.save(model, path)
            return "onnxsim"
    except ImportError:
        pass
    return None


def _logits_name(graph, output_op: str) -> Tuple[str, bool]:
    """The graph's logits tensor for an export with ``output_op``, and whether it holds them at the
    head's resolution: the input of the last ArgMax / Softmax node (the output op), or in an exact
    fast argmax (``segkit.engine.class_map.exact_argmax``: Gather of the candidate classes, Resize,
    ArgMax) the logits the candidates are gathered from."""
    op_type = "ArgMax" if output_op == "argmax" else "Softmax"
    final = next((node for node in reversed(graph.node) if node.op_type == op_type), None)
    if final is None:
        raise ExportError(f"no {op_type} node for output_op {output_op}; cannot read the logits to check.")
    producer = {name: node for node in graph.node for name in node.output}
    resize = producer.get(final.input[0])
    gather = producer.get(resize.input[0]) if resize is not None and resize.op_type == "Resize" else None
    if output_op == "argmax" and gather is not None and gather.op_type == "Gather":
        return gather.input[0], True
    return final.input[0], False


def _session_with_logits(path: str, output_op: str):
    """An ONNX Runtime session whose last output is the logits (see ``_logits_name``; with the 'none'
    output op, the graph's output), and whether they are at the head's resolution."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(path)
    at_head = False
    if output_op != "none":
        try:
            name, at_head = _logits_name(model.graph, output_op)
        except ExportError as exc:
            raise ExportError(f"{path}: {exc}") from exc
        model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"]), at_head


def check_sizes(input_shape: Sequence[Optional[int]]) -> List[Tuple[int, int, int, int]]:
    """Two check inputs for an export's input shape: free dims become 1x3x64x64 and 2x3x70x110."""
    sizes = []
    for default in ((1, 3, 64, 64), (2, 3, 70, 110)):
        shape = tuple(d if d not in (None, -1) else default[i] for i, d in enumerate(input_shape))
        if shape not in sizes:
            sizes.append(shape)
    return sizes


@paddle.no_grad()
def check_onnx(model: nn.Layer, path: str, input_shape: Sequence[Optional[int]], output_op: str = "none",
               seed: int = 0) -> List[CheckResult]:
    """Compare the ONNX model at ``path`` with the dygraph ``model`` on random inputs at two sizes.

    Args:
        model: the dygraph model that was exported (its eval forward gives the logits).
        path: the ONNX file.
        input_shape: the export's [N, C, H, W] (None / -1 dynamic).
        output_op: the export's output op ('argmax', 'softmax' or 'none').
        seed: of the random inputs.

    Raises:
        ExportError: the logits differ by more than the tolerance at some size.
    """
    session, at_head = _session_with_logits(path, output_op)
    name = session.get_inputs()[0].name
    model.eval()
    rng = np.random.default_rng(seed)
    results = []
    for shape in check_sizes(input_shape):
        x = rng.normal(size=shape).astype("float32")
        with head_resolution(model) if at_head else contextlib.nullcontext():
            expected = model(paddle.to_tensor(x))
        expected = (expected[0] if isinstance(expected, (list, tuple)) else expected).numpy()
        got = session.run(None, {name: x})[-1]
        if got.shape != expected.shape:
            raise ExportError(f"{path}: output shape {list(got.shape)} for input {list(shape)}, dygraph gives "
                              f"{list(expected.shape)}.")
        results.append(CheckResult(shape, float(np.abs(got - expected).max()), max(1.0, float(np.abs(expected).max())),
                                   float((got.argmax(1) == expected.argmax(1)).mean())))
        logger.info(f"ONNX check, {results[-1].line()}")
    bad = [r for r in results if not r.ok]
    if bad:
        raise ExportError(f"{path} does not compute the dygraph model's function: {bad[0].line()}. "
                          "This is a converter or model bug: please report it with the config.")
    return results
