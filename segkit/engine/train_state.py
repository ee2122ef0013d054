"""What a training run is and counts: its settings (``TrainOptions``, the flags of tools/train.py)
and its counters (``TrainState``, saved in every checkpoint's ``train_state.pdstates``)."""

import dataclasses
from typing import Dict, Optional

from segkit.errors import ConfigError


@dataclasses.dataclass
class TrainOptions:
    """Run settings that are not part of the recipe (the command-line flags of tools/train.py)."""

    save_dir: str = "output"
    do_eval: bool = False
    use_vdl: bool = False
    save_interval: int = 1000
    keep_checkpoint_max: int = 5
    resume_model: Optional[str] = None
    log_iters: int = 10
    seed: int = 0
    num_workers: int = 0
    precision: str = "fp32"
    amp_level: str = "O1"
    use_ema: bool = False
    ema_decay: float = 0.9999
    accumulate_steps: int = 1
    sync_bn: bool = False
    overwrite: bool = False
    early_stop_intervals: Optional[int] = None
    repeats: int = 1

    def check(self) -> "TrainOptions":
        """Reject values that cannot work, naming the flag."""
        for name in ("save_interval", "keep_checkpoint_max", "log_iters", "accumulate_steps", "repeats"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name}: must be at least 1, got {getattr(self, name)}.")
        if self.precision not in ("fp32", "fp16", "bf16"):
            raise ConfigError(f"--precision: expected fp32, fp16 or bf16, got {self.precision!r}.")
        if self.amp_level not in ("O1", "O2"):
            raise ConfigError(f"--amp_level: expected O1 or O2, got {self.amp_level!r}.")
        if self.num_workers < 0:
            raise ConfigError(f"--num_workers: must be 0 or more, got {self.num_workers}.")
        if self.early_stop_intervals is not None and (self.early_stop_intervals < 1 or not self.do_eval):
            raise ConfigError(f"--early_stop_intervals {self.early_stop_intervals}: needs --do_eval (it counts "
                              "evaluations without a new best mIoU) and a value of at least 1.")
        if not 0.0 < self.ema_decay < 1.0:
            raise ConfigError(f"--ema_decay: expected a number between 0 and 1 (e.g. 0.9999), got {self.ema_decay}.")
        return self


@dataclasses.dataclass
class TrainState:
    """The counters of a run: with the weights, optimizer and schedule, everything a resume needs.

    Attributes:
        iter: the last completed iteration (0 before the first).
        best_miou: the best validation mIoU so far (-1 before the first evaluation).
        best_iter: the iteration that reached ``best_miou`` (-1 before the first evaluation).
        skipped_steps: fp16 steps skipped because the loss or the gradients were not finite.
        train_log_bytes: the size of ``train.log`` when the checkpoint was saved (-1: unknown), so
            a resume cuts the lines of later iterations.
        evals_since_best: evaluations since the best one whose mIoU was lower than the best (an
            equal mIoU counts neither way, as in PaddleSeg's early stopping).
    """

    iter: int = 0
    best_miou: float = -1.0
    best_iter: int = -1
    skipped_steps: int = 0
    train_log_bytes: int = -1
    evals_since_best: int = 0

    def to_dict(self) -> Dict[str, object]:
        """The fields by name, as ``train_state.pdstates`` stores them."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, saved: Dict[str, object]) -> "TrainState":
        """The state stored in a checkpoint (keys this class does not know are ignored)."""
        return cls(**{f.name: saved[f.name] for f in dataclasses.fields(cls) if f.name in saved})

    def record_evaluation(self, miou: float, iteration: int) -> bool:
        """Remember ``miou`` if it is the best so far; returns whether it was."""
        if miou > self.best_miou:
            self.best_miou, self.best_iter, self.evals_since_best = miou, iteration, 0
            return True
        if miou < self.best_miou:
            self.evals_since_best += 1
        return False
