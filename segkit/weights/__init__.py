"""Model weights: where they come from (``sources``), reading any supported format (``formats``),
strict loading with named tolerated differences (``strict``), and the one entry point that puts
weights into a built model (``apply``: ``apply_weights(model, WeightsSpec(...))``).

Training checkpoint folders (``iter_N/``, optimizer and resume state) are
``segkit.engine.checkpoints``.
"""

from segkit.weights.apply import WeightsSpec, apply_weights
from segkit.weights.formats import read_state_dict
from segkit.weights.sources import resolve_weights_path
from segkit.weights.strict import STRICT, LoadReport, Tolerance, load_weights

__all__ = ["STRICT", "LoadReport", "Tolerance", "WeightsSpec", "apply_weights", "load_weights", "read_state_dict",
           "resolve_weights_path"]
