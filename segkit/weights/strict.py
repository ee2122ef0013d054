"""Strict loading: key sets and shapes are compared before anything is copied, and only named
differences are tolerated; anything else raises with a report of what did not fit."""

from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Tuple

import numpy as np
import paddle

from segkit.errors import CheckpointError

def paddle_dtype_to_numpy(dtype) -> str:
    """The NumPy dtype name of a Paddle dtype (``paddle.float32`` -> ``'float32'``)."""
    return str(dtype).split(".")[-1]


@dataclass
class LoadReport:
    """What ``load_weights`` did, key by key."""

    loaded: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    mismatched: List[Tuple[str, tuple, tuple]] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)

    def summary(self, total: int) -> str:
        """A multi-line human-readable account of the load."""
        lines = [f"loaded {len(self.loaded)} of {total} tensors"]
        for title, items in (("missing", self.missing), ("unexpected", self.unexpected)):
            if items:
                lines.append(f"{title} ({len(items)}): " + ", ".join(items[:8]) + (" ..." if len(items) > 8 else ""))
        if self.mismatched:
            shown = [f"{k} checkpoint {tuple(a)} vs model {tuple(b)}" for k, a, b in self.mismatched[:8]]
            lines.append(f"wrong shape ({len(self.mismatched)}): " + "; ".join(shown))
        if self.skipped:
            lines.append(f"left at initial values by request ({len(self.skipped)}): " + ", ".join(self.skipped[:8]))
        return "\n  ".join(lines)


@dataclass(frozen=True)
class Tolerance:
    """Named differences a weights file may have from the layer it loads into (key prefixes).

    A layer class declares the differences its ``pretrained`` weights may have as the class
    attribute ``pretrained_tolerance`` (e.g. a classifier trained for another number of classes,
    an ImageNet head); whole-model checkpoints (``--model_path``, resume) tolerate none.

    Attributes:
        missing: prefixes the file may lack (they keep their initial values).
        unexpected: prefixes in the file that are dropped.
        shape_mismatch: prefixes whose shapes may differ (they keep their initial values).
        foreign: also drop every key under a top-level name the layer does not have (an
            ImageNet classifier with upstream names, say).
    """

    missing: Tuple[str, ...] = ()
    unexpected: Tuple[str, ...] = ()
    shape_mismatch: Tuple[str, ...] = ()
    foreign: bool = False

    def unexpected_in(self, layer: paddle.nn.Layer, state: Dict[str, np.ndarray]) -> Tuple[str, ...]:
        """The prefixes to drop from ``state`` (already in the layer's names) for ``layer``."""
        if not self.foreign:
            return self.unexpected
        roots = {key.split(".")[0] for key in layer.state_dict()}
        return self.unexpected + tuple(sorted({k.split(".")[0] for k in state} - roots))


STRICT = Tolerance()


def _matches(key: str, prefixes: Iterable[str]) -> bool:
    return any(key == p or key.startswith(p.rstrip(".") + ".") for p in prefixes)


def load_weights(
    layer: paddle.nn.Layer,
    state: Dict[str, np.ndarray],
    source: str = "checkpoint",
    allow_missing: Iterable[str] = (),
    allow_unexpected: Iterable[str] = (),
    allow_shape_mismatch: Iterable[str] = (),
    remap: Optional[Callable[[Dict[str, np.ndarray]], Dict[str, np.ndarray]]] = None,
) -> LoadReport:
    """Load ``state`` into ``layer`` only if the key sets and shapes agree.

    Keys are compared before anything is copied. Differences are allowed only under the named
    prefixes (e.g. a classifier trained for another number of classes); any other difference raises
    CheckpointError with the full report, and the layer is left untouched.

    Args:
        layer: the model or backbone to fill.
        state: name -> array, e.g. from ``read_state_dict``.
        source: the file the state came from, for messages.
        allow_missing: key prefixes the checkpoint may lack (they keep their initial values).
        allow_unexpected: key prefixes in the checkpoint that are dropped (e.g. a classification head).
        allow_shape_mismatch: key prefixes whose shapes may differ (they keep their initial values).
        remap: a pure function translating upstream key names to the layer's; default: the layer's
            own ``remap_checkpoint_keys`` when it has one.
    """
    remap = remap or getattr(layer, "remap_checkpoint_keys", None)
    if remap is not None:
        state = remap(dict(state))
    own = layer.state_dict()
    report = LoadReport()
    to_set = {}
    for key, param in own.items():
        if key not in state:
            (report.skipped if _matches(key, allow_missing) else report.missing).append(key)
            continue
        value = state[key]
        if tuple(value.shape) != tuple(param.shape):
            if _matches(key, allow_shape_mismatch):
                report.skipped.append(key)
            else:
                report.mismatched.append((key, tuple(value.shape), tuple(param.shape)))
            continue
        to_set[key] = value
        report.loaded.append(key)
    report.unexpected = [k for k in state if k not in own and not _matches(k, allow_unexpected)]
    if report.missing or report.unexpected or report.mismatched:
        raise CheckpointError(
            f"{source} does not fit {type(layer).__name__}:\n  {report.summary(len(own))}\n"
            "Check that the config builds the same model (type, variant, num_classes) as the checkpoint. "
            "To fine-tune on a different number of classes, load it as `pretrained` instead; the "
            "classifier is then re-initialised."
        )
    for key, value in to_set.items():
        own[key].set_value(value.astype(paddle_dtype_to_numpy(own[key].dtype)))
    return report
