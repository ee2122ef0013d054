"""Writing PyTorch checkpoint files without PyTorch, for tests of the readers and converters.

``torch.save`` writes a zip holding ``data.pkl`` (a pickle whose tensors are
``torch._utils._rebuild_tensor_v2`` calls on persistent storage ids) and one raw little-endian file
per storage. The stand-ins below pickle under PyTorch's names, so the files are what PyTorch writes
for the same tensors (``read_torch_zip`` and ``torch.load`` read them alike).
"""

import io
import pickle
import zipfile
from typing import Dict

import numpy as np

_STORAGE_NAMES = {"float32": "FloatStorage", "float16": "HalfStorage", "float64": "DoubleStorage",
                  "int64": "LongStorage", "int32": "IntStorage", "uint8": "ByteStorage", "bool": "BoolStorage"}


class TorchName:
    """Stand-ins pickled under PyTorch's names, so the test writes the format without PyTorch."""

    def __init__(self, module: str, name: str):
        self.torch_name = (module, name)

    def __call__(self, *args):  # pickle requires a callable reducer; only its name is written
        raise NotImplementedError


class FakeStorage:
    """One PyTorch storage: its type (a ``TorchName`` such as ``torch.FloatStorage``), file key and flat data."""

    def __init__(self, kind: TorchName, key: str, data: np.ndarray):
        self.kind, self.key, self.data = kind, key, data


class FakeTensor:
    """A tensor as PyTorch pickles it: a strided view (offset, size, stride) of a storage."""

    REBUILD = TorchName("torch._utils", "_rebuild_tensor_v2")

    def __init__(self, storage: FakeStorage, offset: int, size, stride):
        self.args = (storage, offset, tuple(size), tuple(stride), False, TorchName("collections", "OrderedDict"))

    def __reduce__(self):
        return self.REBUILD, self.args


class _FakeTorchPickler(pickle._Pickler):
    """Writes GLOBAL records for the stand-ins and ('storage', type, key, 'cpu', numel) ids, as torch.save does."""

    def save(self, obj, save_persistent_id=True):
        if isinstance(obj, TorchName):
            self.write(pickle.GLOBAL + f"{obj.torch_name[0]}\n{obj.torch_name[1]}\n".encode())
            return
        super().save(obj, save_persistent_id)

    def persistent_id(self, obj):
        if isinstance(obj, FakeStorage):
            return ("storage", obj.kind, obj.key, "cpu", obj.data.size)
        return None


def write_fake_torch_checkpoint(path: str, obj, storages) -> None:
    """Write ``obj`` (holding ``FakeTensor`` s) and the raw bytes of ``storages`` as a zip-format checkpoint."""
    buffer = io.BytesIO()
    _FakeTorchPickler(buffer, protocol=2).dump(obj)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("ckpt/data.pkl", buffer.getvalue())
        archive.writestr("ckpt/byteorder", "little")
        archive.writestr("ckpt/version", "3\n")
        for storage in storages:
            archive.writestr(f"ckpt/data/{storage.key}", storage.data.astype(storage.data.dtype.newbyteorder("<")).tobytes())


def save_torch_state_dict(path: str, state: Dict[str, np.ndarray], wrapper: str = "") -> None:
    """Write ``state`` (name -> array) as ``torch.save`` would, one storage per tensor.

    Args:
        path: the ``.pth`` / ``.bin`` file to write.
        state: the tensors, in PyTorch's layouts.
        wrapper: save ``{wrapper: state}`` (e.g. ``"state_dict"`` as mmseg does) instead of the bare dict.
    """
    storages, tensors = [], {}
    for index, (name, value) in enumerate(state.items()):
        value = np.require(value, requirements="C")  # (ascontiguousarray would make a 0-d counter 1-d)
        storage = FakeStorage(TorchName("torch", _STORAGE_NAMES[str(value.dtype)]), str(index), value.reshape(-1))
        strides = [int(s // value.itemsize) for s in value.strides]
        storages.append(storage)
        tensors[name] = FakeTensor(storage, 0, value.shape, strides)
    write_fake_torch_checkpoint(path, {wrapper: tensors} if wrapper else tensors, storages)
