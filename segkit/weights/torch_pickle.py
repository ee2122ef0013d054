"""Reading PyTorch checkpoints (zip format, torch >= 1.6) without PyTorch.

The checkpoint's pickle is read by an unpickler that turns tensors into NumPy arrays and every other
class into an inert stand-in, so no code from the file is run.
"""

import collections
import pickle
import zipfile
from typing import Dict

import numpy as np

from segkit.errors import CheckpointError

# PyTorch's legacy storage classes, as its pickles name them -> NumPy dtype (bfloat16: see below).
_TORCH_STORAGES = {
    "FloatStorage": "float32", "DoubleStorage": "float64", "HalfStorage": "float16", "BFloat16Storage": "bfloat16",
    "LongStorage": "int64", "IntStorage": "int32", "ShortStorage": "int16", "CharStorage": "int8",
    "ByteStorage": "uint8", "BoolStorage": "bool", "UntypedStorage": "uint8",
}


class _Opaque:
    """Stands in for any other class a checkpoint pickles (mmcv metadata, say); nothing of it is run."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass


def _rebuild_tensor(storage, offset, size, stride, *unused):
    """``torch._utils._rebuild_tensor_v2`` for NumPy: a strided view of the storage, copied."""
    if not size:
        return np.array(storage[offset])  # a 0-d array, like a 0-d tensor
    itemsize = storage.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(storage[offset:], shape=size, strides=[s * itemsize for s in stride])
    return np.ascontiguousarray(view)


class _TorchUnpickler(pickle.Unpickler):
    """Unpickles a PyTorch ``data.pkl``: tensors become arrays, any other class becomes ``_Opaque``."""

    def __init__(self, file, archive: zipfile.ZipFile, prefix: str):
        super().__init__(file)
        self.archive = archive
        self.prefix = prefix

    def find_class(self, module: str, name: str):
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return lambda data, *unused: data
        if module == "torch._tensor" and name == "_rebuild_from_type_v2":  # tensor subclasses
            return lambda func, new_type, args, state: func(*args)
        if module == "torch" and name in _TORCH_STORAGES:
            return _TORCH_STORAGES[name]
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        return _Opaque

    def persistent_load(self, pid):
        kind, dtype, key = pid[0], pid[1], pid[2]
        if kind != "storage" or not isinstance(dtype, str):
            raise pickle.UnpicklingError(f"unsupported PyTorch storage record {pid[:2]!r}")
        raw = self.archive.read(f"{self.prefix}/data/{key}")
        if dtype == "bfloat16":  # NumPy has no bfloat16: widen the 16 high bits to float32
            return (np.frombuffer(raw, dtype="<u2").astype("<u4") << 16).view("<f4")
        return np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<"))


def read_torch_zip(path: str) -> Dict[str, np.ndarray]:
    """Read a PyTorch checkpoint (zip format, torch >= 1.6) without PyTorch: name -> array.

    Unwraps ``state_dict`` (mmseg) and ``model`` (timm / DeiT training scripts) entries and keeps
    only the tensors.
    """
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"{path}: not a zip-format PyTorch checkpoint (saved by torch < 1.6?). Install PyTorch to read it."
        )
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl")]
        if not pickles:
            raise CheckpointError(f"{path}: the zip holds no data.pkl, so it is not a PyTorch checkpoint.")
        prefix = pickles[0][: -len("/data.pkl")]
        with archive.open(pickles[0]) as file:
            obj = _TorchUnpickler(file, archive, prefix).load()
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict of tensors, got {type(obj).__name__}.")
    return {k: v for k, v in obj.items() if isinstance(v, np.ndarray)}
