"""Training checkpoints (folders): ``save_dir/iter_N/`` and ``save_dir/best_model/``, written atomically.

A checkpoint folder holds ``model.pdparams`` and ``model.pdopt`` (as PaddleSeg writes them) and
``train_state.pdstates`` with everything else a resume needs. Folders are written under a temporary
name and renamed into place, so an interrupted save never leaves a partial ``iter_N``.

``CheckpointManager`` is what the trainer uses: save, find the newest complete checkpoint, restore,
prune. Model weights on their own (pretrained files, URLs, other formats) are ``segkit.weights``.
"""

import dataclasses
import os
import re
import shutil
import tempfile
from typing import Dict, List, Optional

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

    def prepare(self, cfg) -> None:
        """Create ``save_dir`` and write the resolved config next to the checkpoints."""
        if self.writer:
            os.makedirs(self.save_dir, exist_ok=True)
            cfg.dump(os.path.join(self.save_dir, "config.yml"))

    def find_resume(self, resume_model: Optional[str]) -> Optional[str]:
        """Tidy up an interrupted save, then the folder ``resume_model`` names (``auto``: the newest
        complete ``iter_N``), or None to start from scratch."""
        if self.writer:
            for action in clean_interrupted(self.save_dir):
                logger.info(f"Interrupted save: {action}.")
        if not resume_model:
            return None
        folder = resolve_resume(resume_model, self.save_dir)
        if folder is None and self.writer:
            logger.info(f"--resume_model auto: no checkpoint in {self.save_dir} yet; starting from scratch.")
        return folder

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
        loaded = load_checkpoint(folder)
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
