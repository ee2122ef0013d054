"""The one way weights get into a built model: ``apply_weights(model, WeightsSpec(...))``.

Models are built with random weights by pure constructors; the config's ``pretrained`` entries,
``--model_path`` of val/predict/export, a resumed checkpoint and the converter all go through
``apply_weights``. It reads the file (``read_state_dict``: file, folder, URL or archive, any
supported format), translates upstream key names once (the layer's ``remap_checkpoint_keys``) and
loads strictly, allowing only the differences the layer's class names (``pretrained_tolerance``)
when the spec says the weights are pretrained ones.
"""

from dataclasses import dataclass
from typing import Optional

import paddle

from segkit.errors import CheckpointError
from segkit.weights.formats import read_state_dict
from segkit.weights.strict import STRICT, LoadReport, Tolerance, load_weights


@dataclass(frozen=True)
class WeightsSpec:
    """Which weights go into which part of a built model.

    Attributes:
        location: a weights file, a folder holding ``model.pdparams``, an http(s) URL or an archive.
        target: the dotted sub-layer they belong to (``backbone``), or "" for the whole model.
        pretrained: whether they are pretrained weights, which may differ from the layer as its class's
            ``pretrained_tolerance`` names (a re-initialised classifier, a dropped ImageNet head).
            Otherwise every tensor must match.
    """

    location: str
    target: str = ""
    pretrained: bool = False


def tolerance_of(layer: paddle.nn.Layer) -> Tolerance:
    """The differences ``layer``'s class allows its pretrained weights (strict if it names none)."""
    return getattr(type(layer), "pretrained_tolerance", STRICT)


def target_layer(model: paddle.nn.Layer, target: str) -> paddle.nn.Layer:
    """The sub-layer of ``model`` at the dotted path ``target`` ("" for the model itself)."""
    layer = model
    for name in filter(None, target.split(".")):
        child = getattr(layer, name, None)
        if not isinstance(child, paddle.nn.Layer):
            raise CheckpointError(f"weights for {target!r}: {type(model).__name__} has no sub-layer {target!r}.")
        layer = child
    return layer


def apply_weights(model: paddle.nn.Layer, spec: WeightsSpec, tolerance: Optional[Tolerance] = None) -> LoadReport:
    """Load the weights ``spec`` names into ``model`` (or its ``spec.target``), strictly apart from the
    named differences; the model is left untouched if anything else differs.

    Args:
        model: the built model.
        spec: where the weights are and where they go.
        tolerance: differences to allow instead of the ones ``spec`` implies (the converter's flags).

    Raises:
        CheckpointError: the weights cannot be read or do not fit; the message lists the differences.
    """
    layer = target_layer(model, spec.target)
    if tolerance is None:
        tolerance = tolerance_of(layer) if spec.pretrained else STRICT
    state = read_state_dict(spec.location)
    remap = getattr(layer, "remap_checkpoint_keys", None)
    if remap is not None:
        state = remap(dict(state))
    return load_weights(layer, state, source=spec.location, allow_missing=tolerance.missing,
                        allow_unexpected=tolerance.unexpected_in(layer, state),
                        allow_shape_mismatch=tolerance.shape_mismatch, remap=_unchanged)


def _unchanged(state):
    """The state as it is (its keys were remapped already)."""
    return state
