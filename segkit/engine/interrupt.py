"""Stopping a training run at a clean point on SIGINT (Ctrl-C) or SIGTERM.

The first signal is only noted; the trainer finishes the iteration (and any checkpoint being
written) and then stops with ``TrainingInterrupted``, which says where the last checkpoint is and
how to resume. A second signal stops at once (Python's default behaviour); checkpoints are written
atomically, so even then nothing half-written is left (the next run tidies the temporary folder).
In a multi-process run every rank learns at the same iteration that one of them was signalled (one
small all-reduce per iteration), so all stop together and none waits in a collective.
"""

import signal
import threading
from typing import Optional

import paddle
import paddle.distributed as dist

from segkit.errors import StoppedBySignal

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(StoppedBySignal):
    """Training stopped on a signal, at a clean point."""


class StopOnSignal:
    """Context manager: notes SIGINT / SIGTERM instead of dying mid-step (main thread only)."""

    def __init__(self):
        self.signum: Optional[int] = None
        self.previous = {}

    def __enter__(self) -> "StopOnSignal":
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self.previous[sig] = signal.signal(sig, self._note)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def _note(self, signum, frame) -> None:
        self.signum = signum
        for sig, handler in self.previous.items():  # a second signal acts at once
            signal.signal(sig, handler if callable(handler) else signal.default_int_handler
                          if sig == signal.SIGINT else signal.SIG_DFL)

    def requested(self, world_size: int = 1) -> Optional[int]:
        """The signal that asks to stop (on any rank), or None."""
        if world_size <= 1:
            return self.signum
        flag = paddle.to_tensor([self.signum or 0], dtype="int32")
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.numpy()[0]) or None


def interrupted(signum: int, iteration: int, last_checkpoint: Optional[str], resume_hint: str) -> TrainingInterrupted:
    """The error that ends a run stopped by ``signum`` after ``iteration``."""
    name = signal.Signals(signum).name
    if last_checkpoint:
        where = f"The last checkpoint is {last_checkpoint}; continue from it with {resume_hint}."
    else:
        where = "No checkpoint was written yet (see --save_interval), so a new run starts from the beginning."
    return TrainingInterrupted(f"{name} received: training stopped cleanly after iteration {iteration}. {where}",
                               signum)
