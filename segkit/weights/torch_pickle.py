"""Reading PyTorch checkpoints (zip format, torch >= 1.6) without PyTorch.

The checkpoint's pickle is read as data, never as code: PyTorch's tensor records become NumPy
arrays, the metadata classes real checkpoints carry (mmcv / mmengine configs and message hubs,
``argparse.Namespace``, NumPy scalars) become inert stand-ins, and a pickle naming anything else
(``os.system``, ``builtins.eval``, ...) is refused with a message naming the file and the name.
Tensor sizes, strides and offsets come from the file too, so each one is checked against its
storage before a view is taken: a record pointing outside the storage, or at a storage the zip
does not hold, is refused instead of reading outside the buffer.
"""

import collections
import pickle
import zipfile
from typing import Dict

import numpy as np

from segkit.errors import CheckpointError
from segkit.weights.safe_pickle import RefusedGlobal, refused_message

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


def _check_view(storage: np.ndarray, offset, size, stride) -> None:
    """Refuse a tensor record whose view would reach outside ``storage``."""
    numbers = [offset, *size, *stride]
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in numbers) or len(size) != len(stride):
        raise ValueError(f"tensor record with offset {offset!r}, size {size!r}, stride {stride!r}")
    last = offset + sum((n - 1) * st for n, st in zip(size, stride)) if all(size) else offset - 1
    if last >= storage.size:
        raise ValueError(f"tensor of size {tuple(size)}, stride {tuple(stride)} at offset {offset} reaches element "
                         f"{last} of a storage of {storage.size} elements")


def _rebuild_tensor(storage, offset, size, stride, *unused):
    """``torch._utils._rebuild_tensor_v2`` for NumPy: a strided view of the storage, checked, then copied."""
    if not isinstance(storage, np.ndarray):
        raise ValueError(f"tensor record whose storage is a {type(storage).__name__}")
    size, stride = tuple(size), tuple(stride)
    _check_view(storage, offset, size, stride)
    if not size:
        return np.array(storage[offset])  # a 0-d array, like a 0-d tensor
    if not all(size):
        return np.empty(size, storage.dtype)
    itemsize = storage.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(storage[offset:], shape=size, strides=[s * itemsize for s in stride])
    return np.ascontiguousarray(view)


# Classes real checkpoints pickle as metadata beside the tensors; they load as inert stand-ins.
_METADATA_MODULES = ("mmcv.", "mmengine.", "mmseg.", "numpy.")
_METADATA_CLASSES = {("argparse", "Namespace"), ("collections", "defaultdict"), ("builtins", "set"),
                     ("builtins", "frozenset"), ("builtins", "slice")}


def _is_metadata(module: str, name: str) -> bool:
    return (module, name) in _METADATA_CLASSES or module.startswith(_METADATA_MODULES)


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
        if _is_metadata(module, name):
            return _Opaque
        raise RefusedGlobal(module, name)

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage" and pid[1] in _DTYPES):
            raise pickle.UnpicklingError(f"unsupported PyTorch storage record {str(pid)[:60]}")
        member = f"{self.prefix}/data/{pid[2]}"
        try:
            raw = self.archive.read(member)
        except KeyError:
            raise pickle.UnpicklingError(f"the pickle references storage record {member}, which the zip does not hold")
        if pid[1] == "bfloat16":  # NumPy has no bfloat16: widen the 16 high bits to float32
            return (np.frombuffer(raw, dtype="<u2").astype("<u4") << 16).view("<f4")
        return np.frombuffer(raw, dtype=np.dtype(pid[1]).newbyteorder("<"))


_DTYPES = frozenset(_TORCH_STORAGES.values())


def _unpickle(unpickler: pickle.Unpickler, path: str):
    """Run ``unpickler``; a refused name or a broken record becomes a CheckpointError naming ``path``."""
    try:
        return unpickler.load()
    except RefusedGlobal as exc:
        raise CheckpointError(refused_message(path, exc.qualified, "PyTorch's tensor records")) from None
    except Exception as exc:  # a truncated pickle, a bad record: pickle and NumPy raise many types
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: {exc}); the file is damaged or was "
            "not written by torch.save. Nothing was read from outside the file."
        ) from None


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
            obj = _unpickle(_TorchUnpickler(file, archive, prefix), path)
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict of tensors, got {type(obj).__name__}.")
    return {k: v for k, v in obj.items() if isinstance(v, np.ndarray)}
