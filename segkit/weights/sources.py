"""Where weights come from: a local file, a folder holding ``model.pdparams``, an http(s) URL
(downloaded once into the cache) or a .zip / .tar(.gz) archive holding a ``.pdparams``."""

import hashlib
import os
import shutil
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


def download_timeout() -> float:
    """Seconds a download may wait for the server at any point (``$SEGKIT_DOWNLOAD_TIMEOUT``, default 60)."""
    value = os.environ.get("SEGKIT_DOWNLOAD_TIMEOUT", "60")
    try:
        return float(value)
    except ValueError:
        raise CheckpointError(f"$SEGKIT_DOWNLOAD_TIMEOUT: expected a number of seconds, got {value!r}.") from None


def _fetch(url: str, partial: str) -> None:
    """Stream ``url`` into the file ``partial``; refuse a body shorter than the announced length."""
    with urllib.request.urlopen(url, timeout=download_timeout()) as response, open(partial, "wb") as out:
        expected = response.headers.get("Content-Length")
        shutil.copyfileobj(response, out, length=1 << 20)
        written = out.tell()
    if expected is not None and expected.isdigit() and written != int(expected):
        raise OSError(f"the connection ended after {written} of {expected} bytes")


def _download(url: str) -> str:
    """Download ``url`` once into the cache folder and return the local path.

    The bytes go to a temporary name that is renamed into place only once the whole body has
    arrived, so an interrupted, failed or timed-out download never leaves a file a later run trusts.
    """
    name = hashlib.sha1(url.encode()).hexdigest()[:10] + "_" + os.path.basename(url.split("?")[0])
    target = os.path.join(CACHE_DIR, name)
    if os.path.exists(target):
        return target
    os.makedirs(CACHE_DIR, exist_ok=True)
    fd, partial = tempfile.mkstemp(dir=CACHE_DIR, suffix=".part")
    os.close(fd)
    try:
        _fetch(url, partial)
        os.replace(partial, target)
    except (OSError, ValueError) as exc:  # URLError, HTTPError and socket timeouts are OSErrors
        timed_out = isinstance(getattr(exc, "reason", exc), TimeoutError)  # URLError wraps a connect timeout
        reason = f"the server did not answer within {download_timeout():g} s" if timed_out else str(exc)
        raise CheckpointError(
            f"could not download {url}: {reason}. Download it by hand and give the local path instead "
            "($SEGKIT_DOWNLOAD_TIMEOUT sets the wait in seconds)."
        ) from None
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    return target


def _safe_member(path: str, name: str, is_file: bool) -> None:
    """Refuse an archive member that is not a plain file inside the extraction folder."""
    parts = name.replace("\\", "/").split("/")
    if os.path.isabs(name) or name.startswith(("/", "\\")) or ".." in parts or (len(name) > 1 and name[1] == ":"):
        raise CheckpointError(f"{path}: refused: archive member {name!r} would be written outside the extraction "
                              "folder (absolute path or '..'). Extract the weights by hand from a trusted copy.")
    if not is_file:
        raise CheckpointError(f"{path}: refused: archive member {name!r} is a link or device, not a plain file.")


def _archive_members(path: str):
    """An open archive, its member names, and a function that checks one member and extracts it into a folder."""
    if zipfile.is_zipfile(path):
        archive = zipfile.ZipFile(path)

        def extract_zip(member: str, folder: str) -> str:
            info = archive.getinfo(member)
            # A zip entry with the Unix symlink file type is a link, whatever its name.
            _safe_member(path, member, not info.is_dir() and (info.external_attr >> 16) & 0o170000 != 0o120000)
            return archive.extract(info, folder)

        return archive, archive.namelist(), extract_zip
    try:
        archive = tarfile.open(path)
    except tarfile.TarError as exc:
        raise CheckpointError(f"{path}: not a readable zip or tar archive ({exc}).") from exc

    def extract_tar(member: str, folder: str) -> str:
        info = archive.getmember(member)
        _safe_member(path, member, info.isfile())
        archive.extract(info, folder, filter="data")
        return os.path.join(folder, member)

    return archive, archive.getnames(), extract_tar


def _from_archive(path: str) -> str:
    """Extract the ``*.pdparams`` inside a .zip / .tar(.gz) archive (next to it) and return its path.

    ``model.pdparams`` is preferred when the archive holds several weight files. The member is
    extracted into a temporary folder and renamed into place, so an interrupted extraction leaves
    nothing a later run would take for the weights.
    """
    archive, names, extract = _archive_members(path)
    with archive:
        members = [m for m in names if m.endswith(".pdparams")]
        if not members:
            raise CheckpointError(f"{path}: the archive holds no *.pdparams file (it has {names[:5]}).")
        member = sorted(members, key=lambda m: (os.path.basename(m) != "model.pdparams", len(m)))[0]
        folder = path[: -len(next(e for e in ARCHIVES if path.endswith(e)))] + "_extracted"
        target = os.path.join(folder, os.path.basename(member))
        if not os.path.exists(target):
            os.makedirs(folder, exist_ok=True)
            scratch = tempfile.mkdtemp(dir=folder, prefix=".extracting_")
            try:
                os.replace(extract(member, scratch), target)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
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
