"""Convert upstream weights (a PyTorch .pth, a NumPy .npz or a Paddle .pdparams) into a segkit .pdparams.

The named segkit model or backbone is built, the file is translated by its own
``remap_checkpoint_keys`` (for HRViT: official PyTorch names and layouts -> segkit) and loaded
strictly, and the layer's state dict is saved, so the output loads with no further step.

Examples:
    python tools/convert_weights.py hrvit_b1_imagenet.pth hrvit_b1_backbone.pdparams --model HRViT_b1 \
        --allow_unexpected head   # the ImageNet classifier
    python tools/convert_weights.py seg_ade.pth hrvit_b1_ade.pdparams --model hrvit_b1 --num_classes 150

A .pth is read with PyTorch when it is installed, and otherwise by ``read_torch_zip``, a reader of
PyTorch's zip checkpoint format (torch >= 1.6) that needs only the standard library and NumPy and
never runs code from the file.
"""

import argparse
import collections
import importlib.util
import inspect
import os
import pickle
import sys
import zipfile
from typing import Dict, List, Optional

import numpy as np
import paddle

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import segkit.models  # noqa: E402,F401  (registers every model and backbone)
from segkit.checkpoint import load_weights, read_state_dict  # noqa: E402
from segkit.errors import CheckpointError, ConfigError, SegkitError  # noqa: E402
from segkit.registry import BACKBONES, MODELS, did_you_mean  # noqa: E402


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


def read_weights(path: str) -> Dict[str, np.ndarray]:
    """Name -> array from a .npz (numeric entries only), a .pth (with or without PyTorch), or anything
    ``read_state_dict`` reads."""
    if path.endswith(".npz"):
        with np.load(path, allow_pickle=False) as archive:
            return {k: archive[k] for k in archive.files if np.issubdtype(archive[k].dtype, np.number)}
    if path.endswith((".pth", ".pt")) and os.path.exists(path) and importlib.util.find_spec("torch") is None:
        return read_torch_zip(path)
    return read_state_dict(path)


def build_layer(name: str, num_classes: Optional[int]) -> paddle.nn.Layer:
    """A model (from MODELS, needs ``num_classes``) or a backbone (from BACKBONES) by registered name."""
    if name in MODELS:
        if "num_classes" in inspect.signature(MODELS.get(name)).parameters:
            if num_classes is None:
                raise ConfigError(f"--model {name} is a segmentation model: give --num_classes too.")
            return MODELS.get(name)(num_classes=num_classes)
        return MODELS.get(name)()
    if name in BACKBONES:
        return BACKBONES.get(name)()
    every = MODELS.names() + BACKBONES.names()
    raise ConfigError(f"--model: unknown model or backbone {name!r}.{did_you_mean(name, every)}")


def convert(src: str, dst: str, model: str, num_classes: Optional[int] = None, allow_unexpected: List[str] = ()) -> str:
    """Convert ``src`` for the segkit layer ``model`` and save it to ``dst``; returns the load summary."""
    layer = build_layer(model, num_classes)
    state = {k: (v.astype("float32") if v.dtype == np.float16 else v) for k, v in read_weights(src).items()}
    report = load_weights(layer, state, source=src, allow_unexpected=allow_unexpected)
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    paddle.save(layer.state_dict(), dst)
    return report.summary(len(layer.state_dict()))


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", help="upstream weights: .pth/.pt (needs PyTorch), .npz or .pdparams")
    parser.add_argument("dst", help="output .pdparams")
    parser.add_argument("--model", required=True, help="registered model or backbone name, e.g. hrvit_b1 or HRViT_b1")
    parser.add_argument("--num_classes", type=int, default=None, help="classes, for a segmentation model")
    parser.add_argument(
        "--allow_unexpected", nargs="*", default=[],
        help="key prefixes of the source to drop (e.g. head for an ImageNet classifier)",
    )
    args = parser.parse_args(argv)
    try:
        summary = convert(args.src, args.dst, args.model, args.num_classes, args.allow_unexpected)
    except SegkitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{args.src} -> {args.dst}: {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
