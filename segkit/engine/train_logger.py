"""Where a training run reports: the console and its copy ``train.log``, PaddleSeg's ``[TRAIN]``
line, ``train_log.jsonl`` (one record per iteration), ``eval_history.jsonl`` (one record per
evaluation) and VisualDL (scalars, validation images, the run's hyper-parameters).

A resumed run cuts all three files back to the checkpoint it resumes from, so they read like the
files of an uninterrupted run: the JSON logs by iteration, ``train.log`` at the size it had when
the checkpoint was written (``TrainState.train_log_bytes``).

Only the writing process (rank 0) writes; on the other ranks every method does nothing, so the
trainer calls them unconditionally. A new report of the run (another file, another backend) is a
few lines in ``TrainLogger``: ``open``/``close`` for its file, ``iteration`` or ``evaluation`` for
its records.
"""

import datetime
import json
import logging
import os
import time
from typing import Dict, List, Optional

import numpy as np

from segkit.logger import line_format, logger
from segkit.progress import format_eta

LOSS_LOG = "train_log.jsonl"
EVAL_LOG = "eval_history.jsonl"
CONSOLE_LOG = "train.log"
VDL_IMAGES = 3  # fixed validation images VisualDL shows at every evaluation


class ConsoleCapture(logging.Handler):
    """Holds the segkit logger's records from the start of a run until ``train.log`` can open
    (it opens once the resumed checkpoint, and so the size to cut it back to, is known)."""

    LIMIT = 10_000

    def __init__(self):
        super().__init__()
        self.records: List[logging.LogRecord] = []
        logger.addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.records) < self.LIMIT:
            self.records.append(record)

    def detach(self) -> List[logging.LogRecord]:
        """Stop capturing; returns the records held."""
        logger.removeHandler(self)
        return self.records


def cut_file(path: str, size: int) -> None:
    """Cut ``path`` back to its first ``size`` bytes (nothing when it is shorter or missing)."""
    if size >= 0 and os.path.isfile(path) and os.path.getsize(path) > size:
        os.truncate(path, size)


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
                 iters_per_epoch: int, use_vdl: bool = False, console: Optional[ConsoleCapture] = None,
                 hparams: Optional[Dict[str, object]] = None):
        self.save_dir, self.writer, self.use_vdl = save_dir, writer, use_vdl
        self.iters, self.log_iters = iters, log_iters
        self.global_batch, self.iters_per_epoch = global_batch, max(iters_per_epoch, 1)
        self.console, self.hparams = console, hparams or {}
        self.clock = StepClock()
        self.loss_log = self.eval_log = self.console_file = None
        self.vdl = None

    def open(self, resumed_iter: int, train_log_bytes: int = -1) -> None:
        """Open the run's files, cut back to the resumed iteration, and, if asked, a VisualDL writer.

        Args:
            resumed_iter: the checkpoint's iteration (0 for a fresh run, whose files start empty).
            train_log_bytes: the size of ``train.log`` when that checkpoint was saved (-1: unknown, keep all).
        """
        if not self.writer:
            return
        os.makedirs(self.save_dir, exist_ok=True)
        self.open_console(0 if resumed_iter == 0 else train_log_bytes)
        self.loss_log = self.open_jsonl(LOSS_LOG, resumed_iter)
        self.eval_log = self.open_jsonl(EVAL_LOG, resumed_iter)
        if self.use_vdl:
            from visualdl import LogWriter

            self.vdl = LogWriter(os.path.join(self.save_dir, "vdl"))
            if self.hparams:
                self.vdl.add_hparams(self.hparams, ["Evaluate/mIoU", "Evaluate/Acc", "Evaluate/Kappa", "Evaluate/Dice"])
        self.clock = StepClock()

    def open_jsonl(self, name: str, resumed_iter: int):
        """``save_dir/name`` for appending, without the records of iterations after ``resumed_iter``."""
        path = os.path.join(self.save_dir, name)
        truncate_loss_log(path, resumed_iter)
        return open(path, "a", encoding="utf-8")

    def open_console(self, keep_bytes: int) -> None:
        """Copy the console to ``train.log`` from now on, after the lines captured since the run started."""
        path = os.path.join(self.save_dir, CONSOLE_LOG)
        cut_file(path, keep_bytes)
        self.console_file = logging.FileHandler(path, mode="a", encoding="utf-8")
        self.console_file.setFormatter(line_format())
        for record in self.console.detach() if self.console else []:
            self.console_file.handle(record)
        logger.addHandler(self.console_file)

    def train_log_bytes(self) -> int:
        """The size of ``train.log`` now (-1 on processes that do not write it)."""
        if self.console_file is None:
            return -1
        self.console_file.flush()
        return os.path.getsize(self.console_file.baseFilename)

    def close(self) -> None:
        """Close the files (also after an error)."""
        if self.console_file:
            logger.removeHandler(self.console_file)
            self.console_file.close()
            self.console_file = None
        for name in ("loss_log", "eval_log", "vdl"):
            if getattr(self, name):
                getattr(self, name).close()
                setattr(self, name, None)

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

    def evaluation(self, iteration: int, result: Dict, dataset=None) -> None:
        """Record an evaluation: a line of ``eval_history.jsonl`` and the VisualDL scalars and images.

        Args:
            iteration: the iteration evaluated.
            result: ``evaluate``'s result (``result['shown']``: the images VisualDL shows).
            dataset: the validation dataset (class names, palette) for names and pictures.
        """
        names = list(getattr(dataset, "class_names", None) or [f"class_{i}" for i in range(len(result["class_iou"]))])
        if self.eval_log is not None:
            record = {"iter": iteration, "time": datetime.datetime.now().isoformat(timespec="seconds"),
                      "seconds": round(float(result.get("seconds", 0.0)), 3), "num_images": result["num_images"],
                      **{k: float(result[k]) for k in ("mIoU", "Acc", "Kappa", "Dice")},
                      "class_names": names,
                      **{k: [float(v) for v in result[k]] for k in ("class_iou", "class_precision", "class_recall",
                                                                    "class_dice")}}
            self.eval_log.write(json.dumps(record) + "\n")
            self.eval_log.flush()
        values = {f"Evaluate/{k}": result[k] for k in ("mIoU", "Acc", "Kappa", "Dice")}
        values.update({f"Evaluate/IoU/{i}_{name}": iou for i, (name, iou) in enumerate(zip(names, result["class_iou"]))})
        self.scalars(iteration, values)
        if self.vdl is not None and dataset is not None:
            self.images(iteration, result.get("shown", []), dataset, names)

    def images(self, iteration: int, shown: List[Dict], dataset, names: List[str]) -> None:
        """image | prediction | label of each shown validation image, as VisualDL images."""
        from segkit.engine.report import picture_of
        from segkit.visualize import palette_array

        palette = palette_array(dataset.palette, len(names))
        for k, record in enumerate(shown):
            picture = picture_of(record, names, palette, dataset.ignore_index, dataset.img_channels)
            stem = os.path.splitext(os.path.basename(str(record["image"])))[0]
            self.vdl.add_image(f"Evaluate/images/{k}_{stem}", np.asarray(picture.convert("RGB")), iteration)

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


def hyper_parameters(cfg, options, global_batch: int) -> Dict[str, object]:
    """The run's hyper-parameters as VisualDL shows them (numbers and strings only)."""
    model = cfg.data.get("model") or {}
    schedule = cfg.data.get("lr_scheduler") or {}
    values = {
        "model": model.get("type", ""),
        "backbone": (model.get("backbone") or {}).get("type", ""),
        "optimizer": (cfg.data.get("optimizer") or {}).get("type", ""),
        "weight_decay": (cfg.data.get("optimizer") or {}).get("weight_decay", 0.0),
        "lr_scheduler": schedule.get("type", ""),
        "learning_rate": schedule.get("learning_rate", 0.0),
        "iters": cfg.iters,
        "batch_size": cfg.batch_size,
        "global_batch": global_batch,
        "seed": options.seed,
        "precision": options.precision,
        "use_ema": int(options.use_ema),
    }
    return {k: v if isinstance(v, (int, float, str)) else str(v) for k, v in values.items()}
