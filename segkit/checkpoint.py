"""Reading weights from a path, URL or zip; strict loading with a report; atomic checkpoints."""

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Tuple

import numpy as np
import paddle

from segkit.errors import CheckpointError
from segkit.torch_pickle import read_torch_zip

ARCHIVES = (".zip", ".tar.gz", ".tgz", ".tar")
CACHE_DIR = os.path.expanduser(os.environ.get("SEGKIT_CACHE", "~/.cache/segkit"))


def _download(url: str) -> str:
    """Download ``url`` once into the cache folder and return the local path."""
    name = hashlib.sha1(url.encode()).hexdigest()[:10] + "_" + os.path.basename(url.split("?")[0])
    target = os.path.join(CACHE_DIR, name)
    if os.path.exists(target):
        return target
    os.makedirs(CACHE_DIR, exist_ok=True)
    fd, partial = tempfile.mkstemp(dir=CACHE_DIR, suffix=".part")
    os.close(fd)
    try:
        urllib.request.urlretrieve(url, partial)
    except OSError as exc:
        os.remove(partial)
        raise CheckpointError(
            f"could not download {url}: {exc}. Download it by hand and give the local path instead."
        ) from exc
    os.replace(partial, target)
    return target


def _archive_members(path: str):
    """An open archive's member names and a function extracting one member into a folder."""
    if zipfile.is_zipfile(path):
        archive = zipfile.ZipFile(path)
        return archive, archive.namelist(), archive.extract
    try:
        archive = tarfile.open(path)
    except tarfile.TarError as exc:
        raise CheckpointError(f"{path}: not a readable zip or tar archive ({exc}).") from exc
    return archive, archive.getnames(), lambda member, folder: archive.extract(member, folder, filter="data")


def _from_archive(path: str) -> str:
    """Extract the ``*.pdparams`` inside a .zip / .tar(.gz) archive (next to it) and return its path.

    ``model.pdparams`` is preferred when the archive holds several weight files.
    """
    archive, names, extract = _archive_members(path)
    with archive:
        members = [m for m in names if m.endswith(".pdparams")]
        if not members:
            raise CheckpointError(f"{path}: the archive holds no *.pdparams file (it has {names[:5]}).")
        member = sorted(members, key=lambda m: (os.path.basename(m) != "model.pdparams", len(m)))[0]
        folder = path[: -len(next(e for e in ARCHIVES if path.endswith(e)))] + "_extracted"
        target = os.path.join(folder, member)
        if not os.path.exists(target):
            extract(member, folder)
    return target


def resolve_weights_path(location: str) -> str:
    """Turn a local path, a folder holding ``model.pdparams``, a URL or an archive into a weights file path."""
    if location.startswith(("http://", "https://")):
        location = _download(location)
    if os.path.isdir(location):
        location = os.path.join(location, "model.pdparams")
    if not os.path.exists(location):
        raise CheckpointError(
            f"weights file {location!r} does not exist. Give a *.pdparams file, a folder that holds "
            "model.pdparams, a .zip or .tar.gz containing one, or an http(s) URL."
        )
    if location.endswith(ARCHIVES):
        location = _from_archive(location)
    return location


def read_state_dict(location: str) -> Dict[str, np.ndarray]:
    """Read a state dict from a path, URL or zip as NumPy arrays (``.pth`` files need PyTorch)."""
    path = resolve_weights_path(location)
    if path.endswith((".pth", ".pt", ".bin")):
        state = _read_torch(path)
    else:
        try:
            state = paddle.load(path, return_numpy=True)
        except Exception as exc:  # paddle raises many types for a corrupt file
            raise CheckpointError(f"{path}: not a readable Paddle weights file ({exc}).") from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a dict of tensors, got {type(state).__name__}.")
    if "state_dict" in state and isinstance(state["state_dict"], dict):  # mmseg / torch checkpoints
        state = state["state_dict"]
    return {k: np.asarray(v) for k, v in state.items() if hasattr(v, "shape")}


def _read_torch(path: str) -> Dict[str, np.ndarray]:
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


def atomic_save_dir(target: str, files: Dict[str, object]) -> None:
    """Write ``files`` (name -> object for ``paddle.save``) into folder ``target`` atomically.

    Everything is written into a temporary sibling folder which is then renamed into place, so a
    crash in the middle leaves either the old folder or the complete new one, never a partial one.
    """
    parent = os.path.dirname(os.path.abspath(target))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="." + os.path.basename(target) + ".tmp", dir=parent)
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; checkpoints are ordinary folders
    for name, obj in files.items():
        paddle.save(obj, os.path.join(tmp, name))
    old = None
    if os.path.exists(target):
        old = tempfile.mkdtemp(prefix="." + os.path.basename(target) + ".old", dir=parent)
        os.rmdir(old)
        os.replace(target, old)
    os.replace(tmp, target)
    if old:
        shutil.rmtree(old, ignore_errors=True)


def load_model_file(layer: paddle.nn.Layer, location: str) -> LoadReport:
    """Load a whole-model checkpoint (path, folder, URL or zip) strictly into ``layer``."""
    return load_weights(layer, read_state_dict(location), source=location)
