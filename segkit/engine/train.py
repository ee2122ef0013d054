"""The training loop: build, loop, step, periodically evaluate and save.

Every step's randomness (augmentation, dropout, drop-path, random bases) is seeded from
``(seed, iteration)``, so a run resumed at iteration k continues exactly as the uninterrupted
run would have.
"""

import contextlib
import dataclasses
import math
import os
import time
from typing import Dict, Optional

import numpy as np
import paddle
import paddle.distributed as dist

from segkit.config import Config
from segkit.engine import checkpoints
from segkit.engine.ema import ModelEMA
from segkit.engine.evaluate import evaluate, write_reports
from segkit.engine.sampler import SeededDataset, TrainSampler
from segkit.errors import ConfigError, TrainingError
from segkit.logger import logger


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

    def check(self) -> "TrainOptions":
        """Reject values that cannot work, naming the flag."""
        for name in ("save_interval", "keep_checkpoint_max", "log_iters", "accumulate_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name}: must be at least 1, got {getattr(self, name)}.")
        if self.precision not in ("fp32", "fp16", "bf16"):
            raise ConfigError(f"--precision: expected fp32, fp16 or bf16, got {self.precision!r}.")
        if self.amp_level not in ("O1", "O2"):
            raise ConfigError(f"--amp_level: expected O1 or O2, got {self.amp_level!r}.")
        if self.num_workers < 0:
            raise ConfigError(f"--num_workers: must be 0 or more, got {self.num_workers}.")
        return self


def format_eta(seconds: float) -> str:
    """``HH:MM:SS`` for a number of seconds."""
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _collate(batch):
    images = np.stack([b[0] for b in batch])
    labels = np.stack([b[1] for b in batch])
    return images, labels


class Trainer:
    """Trains the model a config describes.

    Args:
        cfg: the loaded config (needs model, train_dataset, optimizer, lr_scheduler, loss, iters,
            batch_size; val_dataset with ``do_eval``).
        options: run settings.
    """

    def __init__(self, cfg: Config, options: TrainOptions):
        self.cfg = cfg
        self.opts = options.check()
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        paddle.seed(options.seed)
        np.random.seed(options.seed)
        self.model = cfg.build_model()
        self.train_set = cfg.build_dataset("train")
        self.val_set = cfg.build_dataset("val") if options.do_eval else None
        self.loss = cfg.build_loss()
        self.loss.check_outputs(int(getattr(self.model, "num_outputs", 1)), type(self.model).__name__)
        self.lr = cfg.build_lr_scheduler()
        self.optimizer = cfg.build_optimizer(self.model, self.lr)
        self.scaler = paddle.amp.GradScaler(init_loss_scaling=2.0**15) if options.precision == "fp16" else None
        if options.precision != "fp32" and options.amp_level == "O2":
            self.model, self.optimizer = paddle.amp.decorate(self.model, self.optimizer, level="O2",
                                                             dtype="float16" if options.precision == "fp16" else "bfloat16")
        self.ema = ModelEMA(self.model, options.ema_decay) if options.use_ema else None
        self.net = paddle.DataParallel(self.model) if self.world > 1 else self.model
        self.state = {"iter": 0, "best_miou": -1.0, "best_iter": -1, "skipped_steps": 0, "last_checkpoint": None}
        self.vdl = None
        self.history = []  # (iteration, total loss) of every step run by this process

    # ---- one step -------------------------------------------------------------------------
    def autocast(self):
        """The mixed-precision context for the forward pass (a no-op in fp32)."""
        if self.opts.precision == "fp32":
            return contextlib.nullcontext()
        dtype = "float16" if self.opts.precision == "fp16" else "bfloat16"
        return paddle.amp.auto_cast(level=self.opts.amp_level, dtype=dtype)

    def step(self, images: paddle.Tensor, labels: paddle.Tensor, iteration: int) -> Dict[str, float]:
        """Forward, backward and (every ``accumulate_steps``) an optimizer step; returns the losses."""
        with self.autocast():
            logits = self.net(images)
        logits = logits if isinstance(logits, (list, tuple)) else [logits]
        total, parts = self.loss(logits, labels)
        value = float(total)
        if not math.isfinite(value) and self.scaler is None:
            raise TrainingError(
                f"the loss became {value} at iteration {iteration} (lr {self.lr.get_lr():.3g}). Last good "
                f"checkpoint: {self.state['last_checkpoint'] or 'none yet'}. Lower the learning rate, add "
                "optimizer.grad_clip_cfg, or check the labels with tools/check_dataset.py."
            )
        scaled = total / self.opts.accumulate_steps
        (self.scaler.scale(scaled) if self.scaler else scaled).backward()
        if iteration % self.opts.accumulate_steps == 0:
            self.apply_gradients(value)
        return {"loss": value, "parts": [float(p) for p in parts]}

    def apply_gradients(self, loss_value: float) -> None:
        """Optimizer step (through the loss scaler in fp16), then clear gradients and update the EMA."""
        if self.scaler:
            if not math.isfinite(loss_value):
                self.state["skipped_steps"] += 1
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.clear_grad()
        if self.ema:
            self.ema.update(self.model)

    # ---- the loop -------------------------------------------------------------------------
    def loader(self, start_iter: int):
        """An endless loader over this rank's batches, starting after ``start_iter`` batches."""
        sampler = TrainSampler(len(self.train_set), self.cfg.batch_size, self.opts.seed, self.rank, self.world, start_iter)
        return paddle.io.DataLoader(SeededDataset(self.train_set), batch_sampler=sampler,
                                    num_workers=self.opts.num_workers, collate_fn=_collate, use_shared_memory=False)

    def train(self) -> Dict[str, object]:
        """Run from the current (or resumed) iteration to ``iters``; returns the final state."""
        self.resume()
        os.makedirs(self.opts.save_dir, exist_ok=True)
        if self.rank == 0:
            self.cfg.dump(os.path.join(self.opts.save_dir, "config.yml"))
            self.open_vdl()
        iters = self.cfg.iters
        self.model.train()
        batches = iter(self.loader(self.state["iter"]))
        clock = {"reader": 0.0, "batch": 0.0, "n": 0, "start": time.time()}
        tick = time.time()
        for iteration in range(self.state["iter"] + 1, iters + 1):
            images, labels = next(batches)
            clock["reader"] += time.time() - tick
            paddle.seed(self.opts.seed * 1_000_003 + iteration)
            losses = self.step(paddle.to_tensor(images), paddle.to_tensor(labels), iteration)
            self.lr.step()
            self.state["iter"] = iteration
            self.history.append((iteration, losses["loss"]))
            clock["batch"] += time.time() - tick
            clock["n"] += 1
            if iteration % self.opts.log_iters == 0 or iteration == iters:
                self.log(iteration, losses, clock)
                clock.update(reader=0.0, batch=0.0, n=0)
            if iteration % self.opts.save_interval == 0 or iteration == iters:
                self.evaluate_and_save(iteration)
            tick = time.time()
        if self.vdl:
            self.vdl.close()
        return self.state

    def log(self, iteration: int, losses: Dict, clock: Dict) -> None:
        """Print PaddleSeg's ``[TRAIN]`` line (rank 0) and write VisualDL scalars."""
        if self.rank != 0:
            return
        n = max(clock["n"], 1)
        batch_cost, reader_cost = clock["batch"] / n, clock["reader"] / n
        epoch = (iteration - 1) // max(len(self.train_set) // (self.cfg.batch_size * self.world), 1) + 1
        lr = self.lr.get_lr()
        ips = self.cfg.batch_size * self.world / max(batch_cost, 1e-9)
        eta = format_eta((self.cfg.iters - iteration) * batch_cost)
        logger.info(
            f"[TRAIN] epoch: {epoch}, iter: {iteration}/{self.cfg.iters}, loss: {losses['loss']:.4f}, "
            f"lr: {lr:.6f}, batch_cost: {batch_cost:.4f}, reader_cost: {reader_cost:.5f}, "
            f"ips: {ips:.4f} samples/sec | ETA {eta}"
        )
        if self.vdl:
            self.vdl.add_scalar("Train/loss", losses["loss"], iteration)
            for i, part in enumerate(losses["parts"]):
                self.vdl.add_scalar(f"Train/loss_{i}", part, iteration)
            self.vdl.add_scalar("Train/lr", lr, iteration)
            self.vdl.add_scalar("Train/batch_cost", batch_cost, iteration)
            self.vdl.add_scalar("Train/reader_cost", reader_cost, iteration)

    def open_vdl(self) -> None:
        """Start a VisualDL writer in ``save_dir/vdl`` when asked to."""
        if self.opts.use_vdl:
            from visualdl import LogWriter

            self.vdl = LogWriter(os.path.join(self.opts.save_dir, "vdl"))

    # ---- evaluation and checkpoints ------------------------------------------------------------
    def evaluate_and_save(self, iteration: int) -> None:
        """Evaluate (with ``do_eval``), then save ``iter_N`` and, on a new best mIoU, ``best_model``."""
        result = None
        if self.val_set is not None:
            context = self.ema.applied(self.model) if self.ema else contextlib.nullcontext()
            with context:
                result = evaluate(self.model, self.val_set, self.cfg.test_config(), self.opts.num_workers)
            self.model.train()
            if self.vdl:
                self.vdl.add_scalar("Evaluate/mIoU", result["mIoU"], iteration)
                self.vdl.add_scalar("Evaluate/Acc", result["Acc"], iteration)
        improved = result is not None and result["mIoU"] > self.state["best_miou"]
        if improved:
            self.state.update(best_miou=result["mIoU"], best_iter=iteration)
        if self.rank != 0:
            return
        folder = os.path.join(self.opts.save_dir, f"iter_{iteration}")
        self.save(folder)
        self.state["last_checkpoint"] = folder
        checkpoints.prune(self.opts.save_dir, self.opts.keep_checkpoint_max)
        if improved:
            best = os.path.join(self.opts.save_dir, "best_model")
            self.save(best)
            write_reports(result, best, getattr(self.val_set, "class_names", None))
        if result is not None:
            logger.info(
                f"[EVAL] The model with the best validation mIoU ({self.state['best_miou']:.4f}) was saved at "
                f"iter {self.state['best_iter']}."
            )

    def save(self, folder: str) -> None:
        """Write model, optimizer and resume state to ``folder`` atomically."""
        state = dict(self.state, lr_scheduler=self.lr.state_dict(), seed=self.opts.seed)
        if self.scaler:
            state["scaler"] = self.scaler.state_dict()
        extra = {"ema.pdparams": self.ema.state_dict()} if self.ema else None
        optimizer_state = checkpoints.portable_optimizer_state(self.model, self.optimizer.state_dict())
        checkpoints.save_checkpoint(folder, self.model.state_dict(), optimizer_state, state, extra)

    def resume(self) -> None:
        """Restore model, optimizer, schedule, counters, loss scaler and EMA from ``resume_model``."""
        if not self.opts.resume_model:
            return
        folder = checkpoints.resolve_resume(self.opts.resume_model, self.opts.save_dir)
        if folder is None:
            logger.info(f"--resume_model auto: no checkpoint in {self.opts.save_dir} yet; starting from scratch.")
            return
        loaded = checkpoints.load_checkpoint(folder)
        from segkit.checkpoint import load_weights

        load_weights(self.model, {k: np.asarray(v) for k, v in loaded["model.pdparams"].items()}, source=folder)
        self.optimizer.set_state_dict(checkpoints.restore_optimizer_state(self.model, loaded["model.pdopt"]))
        state = loaded["train_state.pdstates"]
        self.lr.set_state_dict(state.pop("lr_scheduler"))
        if self.scaler and "scaler" in state:
            self.scaler.load_state_dict(state.pop("scaler"))
        if self.ema and "ema.pdparams" in loaded:
            self.ema.set_state_dict(loaded["ema.pdparams"])
        state.pop("seed", None)
        state.pop("scaler", None)
        self.state.update(state)
        self.state["last_checkpoint"] = folder
        logger.info(f"Resumed from {folder} at iteration {self.state['iter']}.")
