"""Reading a weights file into a dict of NumPy arrays: the one reading entry point.

``read_state_dict`` resolves the location (``segkit.weights.sources``), picks the reader for the
file's format (``reader_for``) and unwraps the checkpoint. A new format is one reader function and
one line in ``reader_for``; every tool, the trainer and ``apply_weights`` read through here.
"""

import zipfile
from typing import Callable, Dict

import numpy as np

from segkit.errors import CheckpointError
from segkit.weights.safe_pickle import load_paddle_file
from segkit.weights.sources import resolve_weights_path
from segkit.weights.torch_pickle import read_torch_zip

TORCH_SUFFIXES = (".pth", ".pt", ".bin")
Reader = Callable[[str], object]


def read_state_dict(location: str) -> Dict[str, np.ndarray]:
    """Read a state dict from a path, folder, URL or archive as NumPy arrays.

    Raises:
        CheckpointError: the location does not exist, cannot be read, or holds no dict of tensors.
    """
    path = resolve_weights_path(location)
    state = reader_for(path)(path)
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a dict of tensors, got {type(state).__name__}.")
    if "state_dict" in state and isinstance(state["state_dict"], dict):  # mmseg / torch checkpoints
        state = state["state_dict"]
    return {k: np.asarray(v) for k, v in state.items() if hasattr(v, "shape")}


def reader_for(path: str) -> Reader:
    """The function that reads the file at ``path``, chosen from its format."""
    if path.endswith(TORCH_SUFFIXES):
        return read_torch
    if path.endswith(".safetensors"):
        return read_safetensors
    if path.endswith(".npz"):
        return read_npz
    return read_paddle


def read_safetensors(path: str) -> Dict[str, np.ndarray]:
    """A ``.safetensors`` file (Hugging Face's format) as arrays, with the ``safetensors`` package's NumPy API.

    No PyTorch is needed. bfloat16 tensors, which NumPy cannot hold, are refused with a message.
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return load_file(path)
    except (SafetensorError, OSError, TypeError, ValueError) as exc:
        raise CheckpointError(
            f"{path}: not a readable .safetensors file ({exc}). A bfloat16 file needs converting to float32 "
            "first (e.g. with transformers: model.float().save_pretrained(folder))."
        ) from exc


def read_npz(path: str) -> Dict[str, np.ndarray]:
    """A NumPy ``.npz`` archive's numeric arrays (no pickled objects are read)."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {k: archive[k] for k in archive.files if np.issubdtype(archive[k].dtype, np.number)}
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable .npz file ({exc}).") from exc


def read_paddle(path: str) -> Dict[str, np.ndarray]:
    """A ``paddle.save`` file (``.pdparams``) as arrays, read as data (``segkit.weights.safe_pickle``)."""
    return load_paddle_file(path)


def read_torch(path: str) -> Dict[str, np.ndarray]:
    """A PyTorch checkpoint as arrays: zip-format files are read without PyTorch, older ones need it."""
    if zipfile.is_zipfile(path):
        return read_torch_zip(path)
    try:
        import torch
    except ImportError as exc:
        raise CheckpointError(
            f"{path} is a legacy (pre-1.6) PyTorch checkpoint and reading it needs PyTorch (pip install torch). "
            "Or convert it once elsewhere with tools/convert_weights.py."
        ) from exc
    obj = torch.load(path, map_location="cpu", weights_only=True)
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    return {k: v.detach().cpu().numpy() for k, v in obj.items() if hasattr(v, "detach")}
