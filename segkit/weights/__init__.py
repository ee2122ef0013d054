"""Model weights: where they come from (``sources``), reading any supported format (``formats``),
and strict loading into a built model (``strict``).

Training checkpoint folders (``iter_N/``, optimizer and resume state) are
``segkit.engine.checkpoints``.
"""

from segkit.weights.formats import read_state_dict
from segkit.weights.sources import resolve_weights_path
from segkit.weights.strict import LoadReport, load_model_file, load_weights

__all__ = ["LoadReport", "load_model_file", "load_weights", "read_state_dict", "resolve_weights_path"]
