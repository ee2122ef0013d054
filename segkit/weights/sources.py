"""Where weights come from: a local file, a folder holding ``model.pdparams``, an http(s) URL
(downloaded once into the cache) or a .zip / .tar(.gz) archive holding a ``.pdparams``."""

import hashlib
import os
import tarfile
import tempfile
import urllib.request
import zipfile

from segkit.errors import CheckpointError

# What a folder given as weights may hold, in order of preference: a segkit / PaddleSeg checkpoint
# folder, then a Hugging Face model folder (save_pretrained or a Hub snapshot).
FOLDER_FILES = ("model.pdparams", "model.safetensors", "pytorch_model.bin")
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


def _weights_in_folder(folder: str) -> str:
    """The weights file of a checkpoint folder (segkit's) or a Hugging Face model folder, first found."""
    for name in FOLDER_FILES:
        if os.path.exists(os.path.join(folder, name)):
            return os.path.join(folder, name)
    return os.path.join(folder, FOLDER_FILES[0])


def resolve_weights_path(location: str) -> str:
    """Turn a local path, a folder holding ``model.pdparams``, a URL or an archive into a weights file path."""
    if location.startswith(("http://", "https://")):
        location = _download(location)
    if os.path.isdir(location):
        location = _weights_in_folder(location)
    if not os.path.exists(location):
        raise CheckpointError(
            f"weights file {location!r} does not exist. Give a weights file (.pdparams, .pth, .bin, "
            f".safetensors), a folder that holds one of {', '.join(FOLDER_FILES)}, a .zip or .tar.gz "
            "containing a .pdparams, or an http(s) URL."
        )
    if location.endswith(ARCHIVES):
        location = _from_archive(location)
    return location
