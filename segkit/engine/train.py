"""The training loop: build, loop, step, periodically evaluate and save.

Every step's randomness (augmentation, dropout, drop-path, random bases) is seeded from
``(seed, iteration)``, so a run resumed at iteration k continues exactly as the uninterrupted
run would have.

Started by ``python -m paddle.distributed.launch`` the trainer is data parallel: each process
(rank) takes its own slice of every global batch, gradients are averaged across ranks by
``paddle.DataParallel``, and rank 0 alone logs and writes checkpoints. The loss is a mean over
the labelled pixels of each rank's batch; the average of those means equals the mean over the
global batch when every rank has the same number of labelled pixels (fixed crops and no ignored
pixels). Otherwise pixels on a rank with fewer labelled pixels weigh slightly more, exactly as in
PaddleSeg. The same holds for the micro-batches of gradient accumulation.
"""

import contextlib
import dataclasses
import json
import math
import os
import time
from typing import Dict, List, Optional, Tuple

import numpy as np
import paddle
import paddle.distributed as dist
from paddle import nn

from segkit.config import Config
from segkit.engine import checkpoints
from segkit.engine.ema import ModelEMA
from segkit.engine.evaluate import evaluate, write_reports
from segkit.engine.report import write_html_report
from segkit.engine.sampler import SeededDataset, TrainSampler
from segkit.errors import ConfigError, TrainingError
from segkit.logger import logger
from segkit.runtime import worker_init

LOSS_LOG = "train_log.jsonl"
REPORT_IMAGES = 8  # worst validation images pictured in best_model/report.html


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
        if not 0.0 < self.ema_decay < 1.0:
            raise ConfigError(f"--ema_decay: expected a number between 0 and 1 (e.g. 0.9999), got {self.ema_decay}.")
        return self


def as_tensor(value) -> paddle.Tensor:
    """The DataLoader already hands out tensors; wrap only what is not one (no needless copy)."""
    return value if isinstance(value, paddle.Tensor) else paddle.to_tensor(value)


def format_eta(seconds: float) -> str:
    """``HH:MM:SS`` for a number of seconds."""
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _collate(batch):
    images = np.stack([b[0] for b in batch])
    labels = np.stack([b[1] for b in batch])
    return images, labels


def init_distributed() -> Tuple[int, int]:
    """Join the process group when started by ``paddle.distributed.launch``; returns (rank, world size).

    The launcher sets the environment (rank, endpoints, and the backend: NCCL on GPUs, gloo on
    CPUs); a plain ``python tools/train.py`` is a world of one and needs no group.
    """
    world = dist.get_world_size()
    if world > 1 and not dist.is_initialized():
        dist.init_parallel_env()
    return dist.get_rank(), world


def mixed_precision_available() -> bool:
    """Whether Paddle's autocast and loss scaling act on this device (GPU, XPU or custom, not CPU)."""
    return not paddle.get_device().startswith("cpu")


def convert_sync_bn(model: nn.Layer, world_size: int, device: str) -> nn.Layer:
    """Replace every BatchNorm with ``paddle.nn.SyncBatchNorm`` for a multi-process run (``--sync_bn``).

    Raises:
        ConfigError: on CPU with several processes, where Paddle has no SyncBatchNorm kernel.
    """
    if world_size <= 1:
        logger.info("--sync_bn: a single process already normalises over its whole batch; BatchNorm is kept.")
        return model
    if device.startswith("cpu"):
        raise ConfigError(
            f"--sync_bn: Paddle's SyncBatchNorm runs on GPUs only, and these {world_size} processes run on CPU. "
            "Drop --sync_bn (each process then normalises over its own batch) or launch on GPUs."
        )
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)


def gradients_finite(parameters: List[paddle.Tensor]) -> bool:
    """True when no gradient holds a NaN or an Inf (one device sync for all of them)."""
    checks = [paddle.isfinite(p.grad).all() for p in parameters if p.grad is not None]
    return bool(paddle.stack(checks).all()) if checks else True


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
        self.rank, self.world = init_distributed()
        self.amp = options.precision != "fp32" and mixed_precision_available()
        self.check_precision()
        paddle.seed(options.seed)
        np.random.seed(options.seed)
        self.model = cfg.build_model()
        # A top-level ``sync_bn: true`` in the config asks for the same.
        if options.sync_bn or cfg.data.get("sync_bn", False):
            self.model = convert_sync_bn(self.model, self.world, paddle.get_device())
        self.train_set = cfg.build_dataset("train")
        self.val_set = cfg.build_dataset("val") if options.do_eval else None
        self.loss = cfg.build_loss()
        self.loss.check_outputs(int(getattr(self.model, "num_outputs", 1)), type(self.model).__name__)
        self.state = {"iter": 0, "best_miou": -1.0, "best_iter": -1, "skipped_steps": 0, "last_checkpoint": None}
        self.resume_from = self.find_resume_checkpoint()
        if self.resume_from:
            # Weights go in before an O2 cast to half precision, so they are read in float32.
            self.load_model_weights(self.resume_from)
        self.lr = cfg.build_lr_scheduler()
        self.optimizer = cfg.build_optimizer(self.model, self.lr)
        # On CPU Paddle's scaler does nothing (and says so); it stays off and the trainer's own check
        # still skips steps whose gradients are not finite.
        self.scaler = paddle.amp.GradScaler(enable=self.amp, init_loss_scaling=2.0**15) if options.precision == "fp16" else None
        if self.amp and options.amp_level == "O2":
            self.model, self.optimizer = paddle.amp.decorate(self.model, self.optimizer, level="O2",
                                                             dtype=self.amp_dtype, save_dtype="float32")
        self.ema = ModelEMA(self.model, options.ema_decay) if options.use_ema else None
        self.net = paddle.DataParallel(self.model) if self.world > 1 else self.model
        if self.resume_from:
            self.load_training_state(self.resume_from)
        self.vdl = None
        self.loss_log = None
        self.history = []  # (iteration, total loss) of every step run by this process

    @property
    def amp_dtype(self) -> str:
        return "float16" if self.opts.precision == "fp16" else "bfloat16"

    def check_precision(self) -> None:
        """Say what ``--precision`` will do here: half precision on a device, float32 on CPU."""
        if self.opts.precision == "fp32":
            return
        if not self.amp:
            skipping = " (steps whose gradients are not finite are still skipped and counted)"
            logger.warning(
                f"--precision {self.opts.precision}: Paddle's mixed precision acts on GPU, XPU and custom devices "
                f"only; this run is on {paddle.get_device()}, so it computes in float32"
                f"{skipping if self.opts.precision == 'fp16' else ''}."
            )
        elif self.opts.precision == "bf16" and not paddle.amp.is_bfloat16_supported():
            raise ConfigError(
                f"--precision bf16: {paddle.get_device()} has no bfloat16 support (it needs e.g. an A100, H100 or "
                "newer GPU); use --precision fp16."
            )

    # ---- one step -------------------------------------------------------------------------
    def autocast(self):
        """The mixed-precision context for the forward pass (a no-op in fp32 and on CPU)."""
        if not self.amp:
            return contextlib.nullcontext()
        return paddle.amp.auto_cast(level=self.opts.amp_level, dtype=self.amp_dtype)

    def step(self, images: paddle.Tensor, labels: paddle.Tensor, iteration: int) -> Dict[str, float]:
        """One iteration on this rank's batch: forward and backward over ``accumulate_steps`` micro-batches,
        then one optimizer step. Returns the losses, averaged over micro-batches and ranks."""
        chunks = self.opts.accumulate_steps
        size = images.shape[0] // chunks
        totals, parts = [], []
        for k in range(chunks):
            # Ranks exchange gradients once, after the last micro-batch.
            quiet = self.net.no_sync() if self.world > 1 and k < chunks - 1 else contextlib.nullcontext()
            with quiet:
                total, losses = self.forward_backward(images[k * size:(k + 1) * size], labels[k * size:(k + 1) * size],
                                                      iteration, chunks)
            totals.append(total)
            parts.append(losses)
        value = float(np.mean(totals))
        self.apply_gradients(math.isfinite(value), iteration)
        return {"loss": value, "parts": [float(p) for p in np.mean(parts, axis=0)] if parts[0] else []}

    def forward_backward(self, images: paddle.Tensor, labels: paddle.Tensor, iteration: int, chunks: int):
        """Loss of one micro-batch (averaged over ranks) and its gradients, scaled by ``1 / chunks``."""
        with self.autocast():
            logits = self.net(images)
        logits = logits if isinstance(logits, (list, tuple)) else [logits]
        total, parts = self.loss(logits, labels)
        values = paddle.stack([t.reshape([]) for t in [total, *parts]]).detach().astype("float64")
        if self.world > 1:
            # Every rank sees the same (global) loss, so every rank takes the same decision below.
            dist.all_reduce(values)
            values = values / self.world
        values = values.numpy()
        value = float(values[0])
        if not math.isfinite(value) and self.scaler is None:
            raise TrainingError(
                f"the loss became {value} at iteration {iteration} (lr {self.lr.get_lr():.3g}). Last good "
                f"checkpoint: {self.state['last_checkpoint'] or 'none yet'}. Lower the learning rate, add "
                "optimizer.grad_clip_cfg, or check the labels with tools/check_dataset.py."
            )
        scaled = total / chunks
        (self.scaler.scale(scaled) if self.scaler else scaled).backward()
        return value, [float(v) for v in values[1:]]

    def apply_gradients(self, loss_finite: bool, iteration: int) -> None:
        """Optimizer step, then clear gradients and update the EMA.

        With fp16 loss scaling a step whose loss or gradients are not finite is skipped and counted
        (the scaler then lowers its scale); gradient clipping sees unscaled gradients.
        """
        applied = True
        if self.scaler is None:
            self.optimizer.step()
        else:
            self.scaler.unscale_(self.optimizer)
            grads_ok = gradients_finite(self.model.parameters())
            applied = loss_finite and grads_ok
            if applied or (self.scaler.is_enable() and not grads_ok):
                # With non-finite gradients the scaler skips the update itself and records the overflow.
                self.scaler.step(self.optimizer)
            self.scaler.update()
            if not applied:
                self.state["skipped_steps"] += 1
                if self.rank == 0:
                    logger.warning(f"iteration {iteration}: the loss or the gradients are not finite; step skipped "
                                   f"({self.state['skipped_steps']} so far).")
        self.optimizer.clear_grad()
        if self.ema and applied:
            self.ema.update(self.model)

    # ---- the loop -------------------------------------------------------------------------
    def loader(self, start_iter: int):
        """An endless loader over this rank's batches (``accumulate_steps`` micro-batches each),
        starting after ``start_iter`` batches."""
        sampler = TrainSampler(len(self.train_set), self.cfg.batch_size * self.opts.accumulate_steps, self.opts.seed,
                               self.rank, self.world, start_iter)
        return paddle.io.DataLoader(SeededDataset(self.train_set), batch_sampler=sampler,
                                    num_workers=self.opts.num_workers, collate_fn=_collate, use_shared_memory=False,
                                    worker_init_fn=worker_init)

    def train(self) -> Dict[str, object]:
        """Run from the current (or resumed) iteration to ``iters``; returns the final state."""
        if self.rank == 0:
            os.makedirs(self.opts.save_dir, exist_ok=True)
            self.cfg.dump(os.path.join(self.opts.save_dir, "config.yml"))
            self.open_logs()
        iters = self.cfg.iters
        self.model.train()
        batches = iter(self.loader(self.state["iter"]))
        clock = {"reader": 0.0, "batch": 0.0, "n": 0, "start": time.time()}
        tick = time.time()
        try:
            for iteration in range(self.state["iter"] + 1, iters + 1):
                images, labels = next(batches)
                clock["reader"] += time.time() - tick
                paddle.seed(self.opts.seed * 1_000_003 + iteration)
                lr = self.lr.get_lr()
                losses = self.step(as_tensor(images), as_tensor(labels), iteration)
                self.lr.step()
                self.state["iter"] = iteration
                self.history.append((iteration, losses["loss"]))
                self.write_loss_log(iteration, losses, lr)
                clock["batch"] += time.time() - tick
                clock["n"] += 1
                if iteration % self.opts.log_iters == 0 or iteration == iters:
                    self.log(iteration, losses, clock, lr)
                    clock.update(reader=0.0, batch=0.0, n=0)
                if iteration % self.opts.save_interval == 0 or iteration == iters:
                    self.evaluate_and_save(iteration)
                tick = time.time()
        finally:
            self.close_logs()
        return self.state

    def write_loss_log(self, iteration: int, losses: Dict, lr: float) -> None:
        """Append the iteration's losses to ``save_dir/train_log.jsonl`` (rank 0), one JSON object a line."""
        if self.loss_log is None:
            return
        record = {"iter": iteration, "loss": losses["loss"], "parts": losses["parts"], "lr": lr,
                  "skipped_steps": self.state["skipped_steps"]}
        self.loss_log.write(json.dumps(record) + "\n")
        self.loss_log.flush()

    def log(self, iteration: int, losses: Dict, clock: Dict, lr: float) -> None:
        """Print PaddleSeg's ``[TRAIN]`` line (rank 0) with the iteration's learning rate, and write VisualDL scalars."""
        if self.rank != 0:
            return
        n = max(clock["n"], 1)
        batch_cost, reader_cost = clock["batch"] / n, clock["reader"] / n
        global_batch = self.cfg.batch_size * self.world * self.opts.accumulate_steps
        epoch = (iteration - 1) // max(len(self.train_set) // global_batch, 1) + 1
        ips = global_batch / max(batch_cost, 1e-9)
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

    def open_logs(self) -> None:
        """Open ``train_log.jsonl`` (cut back to the resumed iteration) and, if asked, a VisualDL writer."""
        path = os.path.join(self.opts.save_dir, LOSS_LOG)
        truncate_loss_log(path, self.state["iter"])
        self.loss_log = open(path, "a", encoding="utf-8")
        if self.opts.use_vdl:
            from visualdl import LogWriter

            self.vdl = LogWriter(os.path.join(self.opts.save_dir, "vdl"))

    def close_logs(self) -> None:
        if self.loss_log:
            self.loss_log.close()
            self.loss_log = None
        if self.vdl:
            self.vdl.close()
            self.vdl = None

    # ---- evaluation and checkpoints ------------------------------------------------------------
    def evaluate_and_save(self, iteration: int) -> None:
        """Evaluate (with ``do_eval``), then save ``iter_N`` and, on a new best mIoU, ``best_model``.

        Every rank evaluates its share of the validation set (the confusion matrices are summed
        across ranks); rank 0 writes.
        """
        result = None
        if self.val_set is not None:
            # Seeded as tools/val.py is, so models with random parts (SegNeXt's NMF bases) report the
            # same mIoU here as val.py on this checkpoint; training reseeds every step anyway.
            paddle.seed(self.opts.seed)
            weights = self.ema.applied(self.model) if self.ema else contextlib.nullcontext()
            with weights, self.autocast():
                result = evaluate(self.model, self.val_set, self.cfg.test_config(), self.opts.num_workers,
                                  print_detail=self.rank == 0, keep_worst=REPORT_IMAGES)
            self.model.train()
            if self.vdl:
                self.vdl.add_scalar("Evaluate/mIoU", result["mIoU"], iteration)
                self.vdl.add_scalar("Evaluate/Acc", result["Acc"], iteration)
        improved = result is not None and result["mIoU"] > self.state["best_miou"]
        if improved:
            self.state.update(best_miou=result["mIoU"], best_iter=iteration)
        folder = os.path.join(self.opts.save_dir, f"iter_{iteration}")
        if self.rank == 0:
            self.save(folder)
            checkpoints.prune(self.opts.save_dir, self.opts.keep_checkpoint_max)
        self.state["last_checkpoint"] = folder
        if self.rank != 0:
            return
        if improved:
            best = os.path.join(self.opts.save_dir, "best_model")
            self.save(best)
            write_reports(result, best, self.val_set.class_names)
            write_html_report(result, best, self.val_set.class_names, self.val_set.palette, self.val_set.ignore_index,
                              self.val_set.img_channels, title=f"best model: iteration {iteration}")
        if result is not None:
            logger.info(
                f"[EVAL] The model with the best validation mIoU ({self.state['best_miou']:.4f}) was saved at "
                f"iter {self.state['best_iter']}."
            )

    def save(self, folder: str) -> None:
        """Write model, optimizer and resume state (and the EMA weights) to ``folder`` atomically."""
        state = dict(self.state, lr_scheduler=self.lr.state_dict(), seed=self.opts.seed)
        state.pop("last_checkpoint")
        if self.scaler and self.scaler.is_enable():
            state["scaler"] = self.scaler.state_dict()
        extra = {"ema.pdparams": self.ema.state_dict()} if self.ema else None
        optimizer_state = checkpoints.portable_optimizer_state(self.model, self.optimizer.state_dict())
        checkpoints.save_checkpoint(folder, self.model.state_dict(), optimizer_state, state, extra)

    def find_resume_checkpoint(self) -> Optional[str]:
        """The folder named by ``--resume_model`` (``auto``: the newest complete ``iter_N``), or None."""
        if self.rank == 0:
            for action in checkpoints.clean_interrupted(self.opts.save_dir):
                logger.info(f"Interrupted save: {action}.")
        if not self.opts.resume_model:
            return None
        folder = checkpoints.resolve_resume(self.opts.resume_model, self.opts.save_dir)
        if folder is None and self.rank == 0:
            logger.info(f"--resume_model auto: no checkpoint in {self.opts.save_dir} yet; starting from scratch.")
        return folder

    def load_model_weights(self, folder: str) -> None:
        """Load the model weights of checkpoint ``folder`` (strictly)."""
        from segkit.weights import load_weights

        state = paddle.load(os.path.join(folder, "model.pdparams"))
        load_weights(self.model, {k: np.asarray(v) for k, v in state.items()}, source=folder)

    def load_training_state(self, folder: str) -> None:
        """Restore optimizer, schedule, counters, loss scaler and EMA from checkpoint ``folder``."""
        loaded = checkpoints.load_checkpoint(folder)
        self.optimizer.set_state_dict(checkpoints.restore_optimizer_state(self.model, loaded["model.pdopt"]))
        state = loaded["train_state.pdstates"]
        self.lr.set_state_dict(state.pop("lr_scheduler"))
        scaler_state = state.pop("scaler", None)
        if self.scaler and self.scaler.is_enable() and scaler_state:
            self.scaler.load_state_dict(scaler_state)
        if self.ema:
            # A checkpoint written without --use_ema starts the average from the resumed weights.
            if "ema.pdparams" in loaded:
                self.ema.set_state_dict(loaded["ema.pdparams"])
            elif self.rank == 0:
                logger.info(f"{folder} has no ema.pdparams; the EMA starts from the resumed weights.")
        state.pop("seed", None)
        state.pop("last_checkpoint", None)
        self.state.update({k: v for k, v in state.items() if k in self.state})
        self.state["last_checkpoint"] = folder
        if self.rank == 0:
            logger.info(f"Resumed from {folder} at iteration {self.state['iter']}.")


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
