"""Training checkpoints (folders): ``save_dir/iter_N/`` and ``save_dir/best_model/``, written atomically.

A checkpoint folder holds ``model.pdparams`` and ``model.pdopt`` (as PaddleSeg writes them) and
``train_state.pdstates`` with everything else a resume needs. Folders are written under a temporary
name and renamed into place, so an interrupted save never leaves a partial ``iter_N``.

``CheckpointManager`` is what the trainer uses: save, find the newest complete checkpoint, restore,
prune. Model weights on their own (pretrained files, URLs, other formats) are ``segkit.weights``.
"""

import contextlib
import dataclasses
import os
import re
import shutil
import socket
import tempfile
import time
from typing import Dict, List, Optional, Tuple

import paddle
from paddle import nn

from segkit.engine.train_state import TrainState
from segkit.errors import CheckpointError
from segkit.logger import logger
from segkit.weights.safe_pickle import load_paddle_file

FILES = ("model.pdparams", "model.pdopt", "train_state.pdstates")
ITER_DIR = re.compile(r"^iter_(\d+)$")
# Siblings that atomic_save_dir leaves behind when a save is killed half-way.
LEFTOVER = re.compile(r"^\.(iter_\d+|best_model)\.(tmp|old)")


def atomic_save_dir(target: str, files: Dict[str, object]) -> None:
    """Write ``files`` (name -> object for ``paddle.save``) into folder ``target`` atomically.

    Everything is written into a temporary sibling folder which is then renamed into place, so a
    crash in the middle leaves either the old folder or the complete new one, never a partial one.

    Raises:
        CheckpointError: a write or rename failed (a full disk, a quota, a folder made read-only
            during the run); the temporary folder is removed and the previous ``target`` is kept.
    """
    parent = os.path.dirname(os.path.abspath(target))
    tmp = None
    try:
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix="." + os.path.basename(target) + ".tmp", dir=parent)
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; checkpoints are ordinary folders
        for name, obj in files.items():
            paddle.save(obj, os.path.join(tmp, name))
        _replace_folder(tmp, target)
    except OSError as exc:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
        kept = f"; the previous {os.path.basename(target)} is intact" if os.path.isdir(target) else ""
        raise CheckpointError(f"could not write checkpoint {target}: {exc.strerror or exc}{kept}. Free disk space or "
                              "make the folder writable (or choose another --save_dir) and continue with "
                              "--resume_model auto.") from None


def _replace_folder(new: str, target: str) -> None:
    """Rename folder ``new`` to ``target``, replacing ``target``; a failed rename puts the old one back."""
    old = None
    if os.path.exists(target):
        old = tempfile.mkdtemp(prefix="." + os.path.basename(target) + ".old", dir=os.path.dirname(new))
        os.rmdir(old)
        os.replace(target, old)
    try:
        os.replace(new, target)
    except OSError:
        if old:
            os.replace(old, target)
        raise
    if old:
        shutil.rmtree(old, ignore_errors=True)


def save_checkpoint(folder: str, model_state: Dict, optimizer_state: Dict, train_state: Dict, extra: Optional[Dict] = None) -> None:
    """Write a complete checkpoint folder atomically (``extra`` maps more file names to objects)."""
    files = {"model.pdparams": model_state, "model.pdopt": optimizer_state, "train_state.pdstates": train_state}
    files.update(extra or {})
    atomic_save_dir(folder, files)


def iteration_folders(save_dir: str) -> List[str]:
    """Complete ``iter_N`` folders under ``save_dir``, oldest first."""
    if not os.path.isdir(save_dir):
        return []
    found = []
    for name in os.listdir(save_dir):
        match = ITER_DIR.match(name)
        path = os.path.join(save_dir, name)
        if match and all(os.path.isfile(os.path.join(path, f)) for f in FILES):
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


def prune(save_dir: str, keep: int) -> None:
    """Delete all but the newest ``keep`` iteration checkpoints."""
    folders = iteration_folders(save_dir)
    for path in folders[: max(len(folders) - keep, 0)]:
        shutil.rmtree(path, ignore_errors=True)


def clean_interrupted(save_dir: str) -> List[str]:
    """Tidy up after a save that was killed: drop temporary folders, put back a displaced old folder.

    A save writes ``.NAME.tmp*`` and renames it to ``NAME``; an existing ``NAME`` is first moved to
    ``.NAME.old*``. A kill between the two renames leaves ``NAME`` missing and its previous version
    in ``.NAME.old*``, which is moved back. Returns what was removed or restored.
    """
    if not os.path.isdir(save_dir):
        return []
    done = []
    for entry in sorted(os.listdir(save_dir)):
        match = LEFTOVER.match(entry)
        if not match:
            continue
        path, target = os.path.join(save_dir, entry), os.path.join(save_dir, match.group(1))
        if match.group(2) == "old" and not os.path.exists(target):
            os.replace(path, target)
            done.append(f"restored {target}")
        else:
            shutil.rmtree(path, ignore_errors=True)
            done.append(f"removed {path}")
    return done


def resolve_resume(resume_model: str, save_dir: str) -> Optional[str]:
    """The checkpoint folder to resume from: a path, or ``auto`` for the newest in ``save_dir``."""
    if resume_model == "auto":
        folders = iteration_folders(save_dir)
        return folders[-1] if folders else None
    missing = [f for f in FILES if not os.path.isfile(os.path.join(resume_model, f))]
    if missing:
        raise CheckpointError(
            f"--resume_model {resume_model}: expected a checkpoint folder with {', '.join(FILES)}; "
            f"missing {', '.join(missing)}. Give a save_dir/iter_N folder, or 'auto'."
        )
    return resume_model


def newest_readable(save_dir: str) -> Tuple[Optional[str], Optional[Dict[str, Dict]]]:
    """The newest ``iter_N`` in ``save_dir`` whose files all read completely, with what was read
    (``load_checkpoint``), or (None, None); a damaged newer one is reported and skipped
    (``--resume_model auto`` falls back to the previous checkpoint)."""
    for folder in reversed(iteration_folders(save_dir)):
        try:
            return folder, load_checkpoint(folder)
        except CheckpointError as exc:
            logger.warning(f"--resume_model auto: skipping {folder}, which cannot be read ({exc}); "
                           "falling back to the previous checkpoint.")
    return None, None


class SaveDirLock:
    """An exclusive lock on a ``save_dir`` for one training run: ``save_dir/.lock`` names its owner.

    The lock is an ``flock`` on that file, so the operating system releases it when the process
    ends however it ends (no stale lock after a crash or a kill). It guards against other
    processes; trainers built one after another in one process share it. Without ``fcntl``
    (Windows) no lock is taken.
    """

    NAME = ".lock"
    _held: Dict[str, List[int]] = {}  # path -> [file descriptor, users] for the locks this process holds

    def __init__(self, save_dir: str):
        self.path = os.path.realpath(os.path.join(save_dir, self.NAME))
        self.taken = False

    def acquire(self) -> "SaveDirLock":
        """Take the lock, or raise CheckpointError naming the process that holds it."""
        try:
            import fcntl
        except ImportError:
            return self
        if self.path not in self._held:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                owner = os.read(fd, 300).decode("utf-8", "replace").strip() or "another process"
                os.close(fd)
                raise CheckpointError(
                    f"{os.path.dirname(self.path)} is being written by another training ({owner}); two runs in one "
                    "save_dir would overwrite each other's checkpoints. Wait for it to end, or give another --save_dir."
                ) from None
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}, started "
                         f"{time.strftime('%Y-%m-%d %H:%M:%S')}".encode())
            self._held[self.path] = [fd, 0]
        self._held[self.path][1] += 1
        self.taken = True
        return self

    def release(self) -> None:
        """Release the lock (the last user of this process removes the file and unlocks it)."""
        if not self.taken:
            return
        self.taken = False
        held = self._held[self.path]
        held[1] -= 1
        if held[1] == 0:
            del self._held[self.path]
            with contextlib.suppress(OSError):
                os.remove(self.path)
            os.close(held[0])


def require_writable_folder(folder: str, flag: str = "--save_dir") -> None:
    """Make ``folder`` if it is missing and check that files can be created in it, before any work.

    Raises:
        CheckpointError: ``folder`` is a file, or cannot be made or written (read-only, no permission).
    """
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise CheckpointError(f"{flag} {folder} is a file, not a folder; give a folder for the outputs.")
    try:
        os.makedirs(folder, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as exc:
        raise CheckpointError(f"{flag} {folder} cannot be written ({exc.strerror or exc}); "
                              "give a folder you can write to.") from None


def claim_save_dir(save_dir: str, resume_model: Optional[str], overwrite: bool) -> SaveDirLock:
    """Check that ``save_dir`` can take this run's checkpoints and lock it for the run.

    Refuses a path that is a file or cannot be written, a folder another training is writing, and a
    fresh run (no ``resume_model``) into a folder that holds another run's checkpoints, unless
    ``overwrite`` (then those checkpoints are removed first, so ``auto`` never resumes from them).
    """
    require_writable_folder(save_dir)
    lock = SaveDirLock(save_dir).acquire()
    best = os.path.join(save_dir, "best_model")
    previous = iteration_folders(save_dir) + ([best] if os.path.isdir(best) else [])
    if previous and not resume_model:
        if not overwrite:
            lock.release()
            raise CheckpointError(
                f"--save_dir {save_dir} holds checkpoints of an earlier run ({', '.join(map(os.path.basename, previous))}); "
                "a fresh run would mix its checkpoints with them. Continue that run with --resume_model auto, give "
                "another --save_dir, or add --overwrite to delete them and start over."
            )
        for folder in previous:
            shutil.rmtree(folder)
        logger.info(f"--overwrite: removed the earlier run's {', '.join(map(os.path.basename, previous))}.")
    return lock


def load_checkpoint(folder: str) -> Dict[str, Dict]:
    """Read the three files of a checkpoint folder (plus ``ema.pdparams`` when present) as data:
    arrays come back as NumPy arrays, and a file naming code is refused (``segkit.weights.safe_pickle``)."""
    loaded = {name: load_paddle_file(os.path.join(folder, name)) for name in FILES}
    ema = os.path.join(folder, "ema.pdparams")
    if os.path.isfile(ema):
        loaded["ema.pdparams"] = load_paddle_file(ema)
    return loaded


def _rename_optimizer_keys(state: Dict, mapping: Dict[str, str]) -> Dict:
    """Rename accumulator keys ``<param name>_<accumulator>`` by ``mapping`` (longest name first)."""
    names = sorted(mapping, key=len, reverse=True)
    renamed = {}
    for key, value in state.items():
        if key == "master_weights" and isinstance(value, dict):
            renamed[key] = {mapping.get(k, k): v for k, v in value.items()}
            continue
        prefix = next((n for n in names if key.startswith(n + "_")), None)
        renamed[mapping[prefix] + key[len(prefix):] if prefix else key] = value
    return renamed


def portable_optimizer_state(model, optimizer_state: Dict) -> Dict:
    """The optimizer state keyed by structured parameter names (``backbone.blocks.0.fc1.weight_moment1_0``).

    Paddle keys accumulators by generated names (``linear_12.w_0``) that depend on how many layers
    the process has built before, so a checkpoint keyed by them may not fit a model built in
    another process.
    """
    return _rename_optimizer_keys(optimizer_state, {p.name: n for n, p in model.named_parameters()})


def restore_optimizer_state(model, portable_state: Dict) -> Dict:
    """Inverse of ``portable_optimizer_state`` for this process's model."""
    return _rename_optimizer_keys(portable_state, {n: p.name for n, p in model.named_parameters()})


@dataclasses.dataclass
class Trainables:
    """What a checkpoint holds besides the counters: the objects a training step changes."""

    model: nn.Layer
    optimizer: paddle.optimizer.Optimizer
    lr: paddle.optimizer.lr.LRScheduler
    seed: int
    scaler: Optional[paddle.amp.GradScaler] = None
    ema: Optional[object] = None  # segkit.engine.ema.ModelEMA

    @property
    def scaling(self) -> bool:
        """Whether a loss scaler is in use (fp16 on a device)."""
        return self.scaler is not None and self.scaler.is_enable()


class CheckpointManager:
    """The checkpoints of one run in ``save_dir``: save, find the newest complete one, restore, prune.

    Args:
        save_dir: the run's folder.
        keep: how many ``iter_N`` folders to keep (``--keep_checkpoint_max``).
        writer: whether this process writes (rank 0); the others only read.

    Attributes:
        last: the newest checkpoint of the run, written or resumed from (None before the first).
    """

    def __init__(self, save_dir: str, keep: int, writer: bool = True):
        self.save_dir, self.keep, self.writer = save_dir, keep, writer
        self.last: Optional[str] = None
        self.lock: Optional[SaveDirLock] = None
        self._read_ahead: Dict[str, Dict[str, Dict]] = {}  # folder -> its files, read while finding it

    def prepare(self, cfg) -> None:
        """Create ``save_dir`` and write the resolved config next to the checkpoints."""
        if self.writer:
            os.makedirs(self.save_dir, exist_ok=True)
            cfg.dump(os.path.join(self.save_dir, "config.yml"))

    def find_resume(self, resume_model: Optional[str], overwrite: bool = False) -> Optional[str]:
        """Claim ``save_dir`` (rank 0), tidy up an interrupted save, then the folder ``resume_model``
        names (``auto``: the newest ``iter_N`` that reads completely), or None to start from scratch."""
        if self.writer:
            self.lock = claim_save_dir(self.save_dir, resume_model, overwrite)
            for action in clean_interrupted(self.save_dir):
                logger.info(f"Interrupted save: {action}.")
        if not resume_model:
            return None
        if resume_model == "auto":
            folder, loaded = newest_readable(self.save_dir)
            if folder:
                self._read_ahead[folder] = loaded  # restore() uses it instead of reading the files again
        else:
            folder = resolve_resume(resume_model, self.save_dir)
        if folder is None and self.writer:
            logger.info(f"--resume_model auto: no checkpoint in {self.save_dir} yet; starting from scratch.")
        return folder

    def close(self) -> None:
        """Release ``save_dir`` for other runs."""
        if self.lock:
            self.lock.release()
            self.lock = None

    def save_iteration(self, iteration: int, parts: Trainables, state: TrainState) -> str:
        """Write ``iter_<iteration>`` and prune old ones; returns the folder."""
        folder = os.path.join(self.save_dir, f"iter_{iteration}")
        if self.writer:
            self.save(folder, parts, state)
            prune(self.save_dir, self.keep)
        self.last = folder
        return folder

    def save_best(self, parts: Trainables, state: TrainState) -> str:
        """Write ``best_model``; returns the folder."""
        folder = os.path.join(self.save_dir, "best_model")
        if self.writer:
            self.save(folder, parts, state)
        return folder

    @staticmethod
    def save(folder: str, parts: Trainables, state: TrainState) -> None:
        """Write model, optimizer and resume state (and the EMA weights) to ``folder`` atomically."""
        train_state = dict(state.to_dict(), lr_scheduler=parts.lr.state_dict(), seed=parts.seed)
        if parts.scaling:
            train_state["scaler"] = parts.scaler.state_dict()
        extra = {"ema.pdparams": parts.ema.state_dict()} if parts.ema else None
        optimizer_state = portable_optimizer_state(parts.model, parts.optimizer.state_dict())
        save_checkpoint(folder, parts.model.state_dict(), optimizer_state, train_state, extra)

    @staticmethod
    def restore_model(model: nn.Layer, folder: str) -> None:
        """Load the model weights of checkpoint ``folder`` (strictly)."""
        from segkit.weights import WeightsSpec, apply_weights

        apply_weights(model, WeightsSpec(folder))

    def restore(self, folder: str, parts: Trainables) -> TrainState:
        """Restore optimizer, schedule, loss scaler and EMA from ``folder``; returns its counters."""
        loaded = self._read_ahead.pop(folder, None) or load_checkpoint(folder)
        parts.optimizer.set_state_dict(restore_optimizer_state(parts.model, loaded["model.pdopt"]))
        saved = loaded["train_state.pdstates"]
        parts.lr.set_state_dict(saved["lr_scheduler"])
        if parts.scaling and saved.get("scaler"):
            parts.scaler.load_state_dict(saved["scaler"])
        if parts.ema:
            # A checkpoint written without --use_ema starts the average from the resumed weights.
            if "ema.pdparams" in loaded:
                parts.ema.set_state_dict(loaded["ema.pdparams"])
            elif self.writer:
                logger.info(f"{folder} has no ema.pdparams; the EMA starts from the resumed weights.")
        state = TrainState.from_dict(saved)
        self.last = folder
        if self.writer:
            logger.info(f"Resumed from {folder} at iteration {state.iter}.")
        return state
