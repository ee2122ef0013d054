"""Multiply-accumulates and parameters of a model, counted from the layers one forward pass runs.

``paddle.flops`` crashes on Paddle 3.3 with NumPy 2, and it misses what is not a layer (attention
matmuls, the functional convs of folded decoders). ``count_macs`` runs one forward pass and counts:

* every ``Conv2D`` / ``Conv1D`` / ``Conv2DTranspose`` layer: output elements x (input channels /
  groups) x kernel area, and every ``Linear`` layer: output elements x input features;
* functional ``F.conv2d`` / ``F.linear`` calls made outside those layers, the same way;
* matrix products (``paddle.matmul``, ``paddle.bmm``, ``Tensor.matmul`` / ``@`` / ``.bmm``):
  output elements x the contracted length; ``F.scaled_dot_product_attention``: its two products.

Biases, norms, activations, softmax, pooling, elementwise sums and resizes are not counted (the
convention of the papers' GMACs figures). Each count is credited to the layer running when it
happened, so ``by_layer`` gives per-stage totals at any depth of the layer names.
"""

import contextlib
import dataclasses
from typing import Callable, Dict, Iterator, List, Sequence, Tuple

import numpy as np
import paddle
import paddle.nn.functional as F
from paddle import nn

from segkit.models.layers import paddle_kernels

_CONV_LAYERS = (nn.Conv1D, nn.Conv2D, nn.Conv3D, nn.Conv2DTranspose)
_COUNTED_LAYERS = _CONV_LAYERS + (nn.Linear,)


@dataclasses.dataclass
class Complexity:
    """The result of ``count_macs``.

    Attributes:
        macs: layer name ('' for the model itself) -> multiply-accumulates counted while it was the
            innermost running layer.
        params: structured parameter name -> number of elements.
        trainable: the same for trainable parameters only.
    """

    macs: Dict[str, int]
    params: Dict[str, int]
    trainable: Dict[str, int]

    @property
    def total_macs(self) -> int:
        return sum(self.macs.values())

    def by_layer(self, depth: int) -> List[Tuple[str, int, int]]:
        """(name prefix, MACs, parameters) per part, in order of first appearance.

        Parts are the layer names cut to ``depth`` parts (``backbone.stages.0``); a part inside
        another listed part (``head.classifier`` when ``head`` itself counted MACs) is merged
        into it, so every MAC and parameter is in exactly one row.
        """
        rows: Dict[str, List[int]] = {}
        entries = [(name, value, 0) for name, value in self.macs.items()]
        entries += [(name.rsplit(".", 1)[0] if "." in name else "", 0, value) for name, value in self.params.items()]
        for name, macs, params in entries:
            row = rows.setdefault(_prefix(name, depth), [0, 0])
            row[0] += macs
            row[1] += params
        merged: Dict[str, List[int]] = {}
        for key, (macs, params) in rows.items():
            owner = min((k for k in rows if key.startswith(k + ".")), key=len, default=key)
            row = merged.setdefault(owner, [0, 0])
            row[0] += macs
            row[1] += params
        return [(key, macs, params) for key, (macs, params) in merged.items()]


def _prefix(name: str, depth: int) -> str:
    return ".".join(name.split(".")[:depth]) if name else "(model)"


def _numel(shape: Sequence[int]) -> int:
    return int(np.prod([int(s) for s in shape])) if len(shape) else 1


def layer_macs(layer: nn.Layer, inputs: Sequence, output) -> int:
    """MACs of one Conv / Linear layer call, from its weight and output shapes."""
    out = output[0] if isinstance(output, (list, tuple)) else output
    weight = layer.weight.shape
    if isinstance(layer, nn.Linear):
        return _numel(out.shape) * int(weight[0])  # weight [in, out]
    if isinstance(layer, nn.Conv2DTranspose):  # each input element meets the whole kernel
        x = inputs[0]
        return _numel(x.shape) * _numel(weight[1:])
    return _numel(out.shape) * _numel(weight[1:])  # weight [out, in / groups, *kernel]


def _matmul_macs(x, y, transpose_x=False, transpose_y=False, *args, **kwargs) -> int:
    """Output elements x contracted length of ``matmul(x, y)`` (vectors broadcast as usual)."""
    xs, ys = list(x.shape), list(y.shape)
    contracted = xs[-2] if transpose_x and len(xs) > 1 else xs[-1]
    if len(ys) == 1:
        out_elements = _numel(xs[:-1]) if not transpose_x else _numel(xs[:-2] + xs[-1:])
        return out_elements * contracted
    rows = (xs[-1] if transpose_x else xs[-2]) if len(xs) > 1 else 1
    cols = ys[-2] if transpose_y else ys[-1]
    batch = max(_numel(xs[:-2]), _numel(ys[:-2]))
    return batch * rows * cols * contracted


def _attention_macs(query, key, value, *args, **kwargs) -> int:
    """``softmax(q k^T) v`` on [B, N, heads, d] tensors: two products."""
    b, n, heads, d = query.shape
    m, dv = key.shape[1], value.shape[-1]
    return int(b) * int(heads) * int(n) * int(m) * (int(d) + int(dv))


def _conv_macs(x, weight, *args, **kwargs) -> Callable[[paddle.Tensor], int]:
    return lambda out: _numel(out.shape) * _numel(weight.shape[1:])


def _linear_macs(x, weight, *args, **kwargs) -> Callable[[paddle.Tensor], int]:
    return lambda out: _numel(out.shape) * int(weight.shape[0])


class _Counter:
    """Forward hooks tracking the running layer, and the counts credited to it."""

    def __init__(self, model: nn.Layer):
        self.macs: Dict[str, int] = {}
        self.stack: List[Tuple[str, nn.Layer]] = [("", model)]
        self.handles = []
        for name, layer in model.named_sublayers():
            self.handles.append(layer.register_forward_pre_hook(self._enter(name)))
            self.handles.append(layer.register_forward_post_hook(self._leave))

    def _enter(self, name: str):
        def hook(layer, inputs):
            self.stack.append((name, layer))
        return hook

    def _leave(self, layer, inputs, output):
        name, _ = self.stack.pop()
        if isinstance(layer, _COUNTED_LAYERS):
            self.add(layer_macs(layer, inputs, output), name)

    def add(self, macs: int, name: str = None) -> None:
        name = self.stack[-1][0] if name is None else name
        self.macs[name] = self.macs.get(name, 0) + int(macs)

    def inside_counted_layer(self) -> bool:
        return isinstance(self.stack[-1][1], _COUNTED_LAYERS)

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


@contextlib.contextmanager
def _patched(counter: _Counter) -> Iterator[None]:
    """Count the functional ops while the block runs; restore them afterwards."""
    busy = [False]  # an op implemented with another counted op is counted once

    def wrap(fn, macs_of, result_based=False):
        def counted(*args, **kwargs):
            if busy[0] or counter.inside_counted_layer():
                return fn(*args, **kwargs)
            busy[0] = True
            try:
                out = fn(*args, **kwargs)
            finally:
                busy[0] = False
            macs = macs_of(*args, **kwargs)
            counter.add(macs(out) if result_based else macs)
            return out
        return counted

    targets = [
        (paddle, "matmul", _matmul_macs, False), (paddle, "bmm", _matmul_macs, False),
        (paddle.Tensor, "matmul", _matmul_macs, False), (paddle.Tensor, "bmm", _matmul_macs, False),
        (paddle.Tensor, "__matmul__", _matmul_macs, False),
        (F, "scaled_dot_product_attention", _attention_macs, False),
        (F, "conv2d", _conv_macs, True), (F, "conv1d", _conv_macs, True), (F, "linear", _linear_macs, True),
    ]
    saved = [(owner, name, getattr(owner, name)) for owner, name, _, _ in targets]
    try:
        for (owner, name, macs_of, result_based), (_, _, original) in zip(targets, saved):
            setattr(owner, name, wrap(original, macs_of, result_based))
        yield
    finally:
        for owner, name, original in saved:
            setattr(owner, name, original)


@paddle.no_grad()
def count_macs(model: nn.Layer, input_shape: Sequence[int]) -> Complexity:
    """Run ``model`` once in eval mode on zeros of ``input_shape`` and count its MACs and parameters.

    The model's mode is restored afterwards.
    """
    was_training = model.training
    model.eval()
    counter = _Counter(model)
    try:
        with _patched(counter), paddle_kernels():
            model(paddle.zeros([int(s) for s in input_shape], dtype="float32"))
    finally:
        counter.remove()
        model.train(was_training)
    params = {name: _numel(p.shape) for name, p in model.named_parameters()}
    trainable = {name: _numel(p.shape) for name, p in model.named_parameters() if not p.stop_gradient}
    return Complexity(counter.macs, params, trainable)


def format_count(value: float) -> str:
    """1234567 -> '1.23 M', with G / M / K."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.2f} {unit}"
    return f"{value:.0f}"
