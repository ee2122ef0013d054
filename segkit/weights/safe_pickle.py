"""Reading Paddle's pickled files (``.pdparams``, ``.pdopt``, ``.pdstates``) as data, never as code.

``paddle.load`` is ``pickle.load``: a file crafted with a ``__reduce__`` payload runs any command
while it is read. Paddle's own save format needs only NumPy arrays inside dicts, lists, tuples,
strings and numbers, so ``load_paddle_file`` unpickles with an allow-list of exactly the NumPy
constructors those arrays name (``_reconstruct``, ``ndarray``, ``dtype``, ``scalar``) and
``collections.OrderedDict``. A file that names anything else is refused with a CheckpointError
naming the file and the global, before anything from it is called.
"""

import collections
import pickle
from typing import Any, BinaryIO, Callable, Dict, Tuple

import numpy as np

from segkit.errors import CheckpointError


def _numpy_globals() -> Dict[Tuple[str, str], Callable]:
    """The NumPy names Paddle's pickles use, under NumPy 2 (``numpy._core``) and NumPy 1 (``numpy.core``) paths."""
    core = getattr(np, "_core", None) or np.core
    found = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        found[(module, "_reconstruct")] = core.multiarray._reconstruct
        found[(module, "scalar")] = core.multiarray.scalar
    return found


_ALLOWED = {**_numpy_globals(), ("collections", "OrderedDict"): collections.OrderedDict}


class RefusedGlobal(pickle.UnpicklingError):
    """A pickle named a class or function outside the allow-list."""

    def __init__(self, module: str, name: str):
        super().__init__(f"{module}.{name}")
        self.qualified = f"{module}.{name}"


class DataUnpickler(pickle.Unpickler):
    """An unpickler that admits only NumPy arrays, plain containers and scalars."""

    def find_class(self, module: str, name: str):
        found = _ALLOWED.get((module, name))
        if found is None:
            raise RefusedGlobal(module, name)
        return found

    def persistent_load(self, pid):
        raise pickle.UnpicklingError(f"persistent id {str(pid)[:40]!r} (Paddle's format has none)")


def refused_message(path: str, qualified: str, format_name: str = "Paddle's weights format (NumPy arrays in dicts and lists)") -> str:
    """The message for a weights file whose pickle names ``qualified``, outside ``format_name``."""
    return (
        f"{path}: refused to load: the file's pickle calls {qualified}, which is not part of {format_name}. "
        "A weights file is data; one that names other code may be built to run it when loaded. Nothing from "
        "the file was run. If you made this file yourself, save plain tensors (the model's state_dict)."
    )


def _unpickle(file: BinaryIO, path: str) -> Any:
    """Unpickle Paddle-format data from ``file`` with the allow-list (see the module docstring)."""
    try:
        return DataUnpickler(file).load()
    except RefusedGlobal as exc:
        raise CheckpointError(refused_message(path, exc.qualified)) from None
    except Exception as exc:  # truncated or not a pickle: pickle raises many types
        raise CheckpointError(
            f"{path}: not a readable Paddle file ({type(exc).__name__}: {exc}); it may be truncated or of another "
            "format. Expected a file written by paddle.save."
        ) from None


def _restore(obj: Any) -> Any:
    """Undo what ``paddle.save`` adds around the arrays, as ``paddle.load(..., return_numpy=True)`` does:
    big arrays saved in slices are joined, the name table goes, and Paddle 2.1's ``(name, array)``
    pairs become arrays."""
    if isinstance(obj, dict):
        big = obj.pop("UnpackBigParamInfor@@", {})
        for key, info in big.items():
            obj[key] = np.concatenate([obj.pop(part) for part in info["slices"]]).reshape(info["OriginShape"])
        obj.pop("StructuredToParameterName@@", None)
        return type(obj)((key, _restore(value)) for key, value in obj.items())
    if isinstance(obj, tuple) and len(obj) == 2 and isinstance(obj[0], str) and isinstance(obj[1], np.ndarray):
        return obj[1]
    if isinstance(obj, (list, tuple)):
        return type(obj)(_restore(item) for item in obj)
    return obj


def load_paddle_file(path: str) -> Any:
    """Read a ``.pdparams`` / ``.pdopt`` / ``.pdstates`` file as data; arrays come back as NumPy arrays.

    Raises:
        CheckpointError: the file is missing, unreadable, not a pickle, or names anything outside
            the allow-list (nothing from it is run).
    """
    try:
        with open(path, "rb") as f:
            return _restore(_unpickle(f, path))
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror}).") from None
