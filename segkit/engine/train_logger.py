"""Where a training run reports: PaddleSeg's ``[TRAIN]`` line, ``train_log.jsonl`` (one record per
iteration) and VisualDL scalars.

Only the writing process (rank 0) writes; on the other ranks every method does nothing, so the
trainer calls them unconditionally. A new report of the run (another file, another backend) is a
few lines in ``TrainLogger``: ``open``/``close`` for its file, ``iteration`` or ``evaluation`` for
its records.
"""

import json
import os
import time
from typing import Dict, List, Optional

from segkit.logger import logger
from segkit.progress import format_eta

LOSS_LOG = "train_log.jsonl"


def truncate_loss_log(path: str, last_iter: int) -> None:
    """Keep the records of iterations ``1..last_iter`` in ``path`` (drops later and half-written lines).

    A run resumed from ``iter_k`` repeats iterations ``k+1...``; their old records go, so the log of
    a resumed run reads like the log of an uninterrupted one.
    """
    kept = []
    if last_iter > 0 and os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue  # the line being written when the run was killed
                if isinstance(record, dict) and record.get("iter", last_iter + 1) <= last_iter:
                    kept.append(line if line.endswith("\n") else line + "\n")
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(kept)
    os.replace(tmp, path)


class StepClock:
    """Seconds spent waiting for data and per whole iteration since the last ``[TRAIN]`` line."""

    def __init__(self):
        self.reader = self.batch = 0.0
        self.steps = 0
        self.tick = time.time()

    def restart(self) -> None:
        """An iteration starts now (time between iterations, e.g. saving, is not counted)."""
        self.tick = time.time()

    def data_ready(self) -> None:
        """The iteration's batch has arrived."""
        self.reader += time.time() - self.tick

    def step_done(self) -> None:
        """The iteration's optimizer step is done."""
        self.batch += time.time() - self.tick
        self.steps += 1

    def costs(self):
        """Mean (batch, reader) seconds per iteration since the last reset."""
        steps = max(self.steps, 1)
        return self.batch / steps, self.reader / steps

    def reset(self) -> None:
        self.reader = self.batch = 0.0
        self.steps = 0


class TrainLogger:
    """The run's reports (rank 0 only).

    Args:
        save_dir: where ``train_log.jsonl`` and ``vdl/`` go.
        writer: whether this process writes (rank 0).
        iters: the run's last iteration.
        log_iters: iterations between ``[TRAIN]`` lines.
        global_batch: samples per optimizer step over all ranks and micro-batches.
        iters_per_epoch: optimizer steps per pass over the training set.
        use_vdl: also write VisualDL scalars to ``save_dir/vdl``.
    """

    def __init__(self, save_dir: str, writer: bool, iters: int, log_iters: int, global_batch: int,
                 iters_per_epoch: int, use_vdl: bool = False):
        self.save_dir, self.writer, self.use_vdl = save_dir, writer, use_vdl
        self.iters, self.log_iters = iters, log_iters
        self.global_batch, self.iters_per_epoch = global_batch, max(iters_per_epoch, 1)
        self.clock = StepClock()
        self.loss_log = None
        self.vdl = None

    def open(self, resumed_iter: int) -> None:
        """Open ``train_log.jsonl`` (cut back to the resumed iteration) and, if asked, a VisualDL writer."""
        if not self.writer:
            return
        path = os.path.join(self.save_dir, LOSS_LOG)
        truncate_loss_log(path, resumed_iter)
        self.loss_log = open(path, "a", encoding="utf-8")
        if self.use_vdl:
            from visualdl import LogWriter

            self.vdl = LogWriter(os.path.join(self.save_dir, "vdl"))
        self.clock = StepClock()

    def close(self) -> None:
        """Close the files (also after an error)."""
        if self.loss_log:
            self.loss_log.close()
            self.loss_log = None
        if self.vdl:
            self.vdl.close()
            self.vdl = None

    def iteration(self, iteration: int, losses: Dict, lr: float, skipped_steps: int) -> None:
        """Record a finished iteration; every ``log_iters`` (and at the end) print the ``[TRAIN]`` line."""
        self.clock.step_done()
        if self.loss_log is not None:
            record = {"iter": iteration, "loss": losses["loss"], "parts": losses["parts"], "lr": lr,
                      "skipped_steps": skipped_steps}
            self.loss_log.write(json.dumps(record) + "\n")
            self.loss_log.flush()
        if iteration % self.log_iters == 0 or iteration == self.iters:
            self.train_line(iteration, losses, lr)
            self.clock.reset()

    def train_line(self, iteration: int, losses: Dict, lr: float) -> None:
        """PaddleSeg's ``[TRAIN]`` line with the iteration's learning rate, and the VisualDL scalars."""
        if not self.writer:
            return
        batch_cost, reader_cost = self.clock.costs()
        epoch = (iteration - 1) // self.iters_per_epoch + 1
        ips = self.global_batch / max(batch_cost, 1e-9)
        eta = format_eta((self.iters - iteration) * batch_cost)
        logger.info(
            f"[TRAIN] epoch: {epoch}, iter: {iteration}/{self.iters}, loss: {losses['loss']:.4f}, "
            f"lr: {lr:.6f}, batch_cost: {batch_cost:.4f}, reader_cost: {reader_cost:.5f}, "
            f"ips: {ips:.4f} samples/sec | ETA {eta}"
        )
        self.scalars(iteration, {"Train/loss": losses["loss"], "Train/lr": lr, "Train/batch_cost": batch_cost,
                                 "Train/reader_cost": reader_cost}, losses["parts"])

    def evaluation(self, iteration: int, result: Dict) -> None:
        """Record an evaluation's headline metrics."""
        self.scalars(iteration, {"Evaluate/mIoU": result["mIoU"], "Evaluate/Acc": result["Acc"]})

    def best(self, best_miou: float, best_iter: int) -> None:
        """Say where the best model so far was saved."""
        if self.writer:
            logger.info(f"[EVAL] The model with the best validation mIoU ({best_miou:.4f}) was saved at "
                        f"iter {best_iter}.")

    def info(self, message: str, warning: bool = False) -> None:
        """A line in the log (``warning``: at warning level), from the writing process only."""
        if self.writer:
            (logger.warning if warning else logger.info)(message)

    def scalars(self, iteration: int, values: Dict[str, float], parts: Optional[List[float]] = None) -> None:
        """VisualDL scalars (``parts``: one ``Train/loss_i`` per output's loss), when VisualDL is on."""
        if self.vdl is None:
            return
        values = dict(values)
        for i, part in enumerate(parts or []):
            values[f"Train/loss_{i}"] = part
        for tag, value in values.items():
            self.vdl.add_scalar(tag, value, iteration)
