"""The training loop: build, loop, step, periodically evaluate and save.

The parts live next to it: ``train_state`` (the run's options and counters), ``checkpoints``
(``CheckpointManager``: save, newest complete, restore, prune), ``train_logger`` (the ``[TRAIN]``
line, ``train_log.jsonl``, VisualDL) and ``precision`` (autocast and loss scaling).

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
import math
import weakref
from typing import Dict, Iterator, Tuple

import numpy as np
import paddle
import paddle.distributed as dist
from paddle import nn

from segkit.config import Config
from segkit.engine.checkpoints import CheckpointManager, Trainables
from segkit.engine.ema import ModelEMA
from segkit.engine.evaluate import evaluate, write_reports
from segkit.engine.interrupt import StopOnSignal, interrupted
from segkit.engine.loader import guarded_loader, next_batch
from segkit.engine.report import write_html_report
from segkit.engine.precision import Precision, gradients_finite
from segkit.engine.sampler import SeededDataset, TrainSampler
from segkit.engine.train_logger import VDL_IMAGES, ConsoleCapture, TrainLogger, hyper_parameters
from segkit.engine.train_state import TrainOptions, TrainState
from segkit.errors import ConfigError, TrainingError
from segkit.logger import logger
from segkit.runtime import worker_init

__all__ = ["Trainer", "TrainOptions", "TrainState", "convert_sync_bn", "init_distributed", "step_seed"]

# Iteration seeds are seed * STEP_SEED_STRIDE + iteration: a prime larger than any run's iteration
# count, so two (seed, iteration) pairs never share a seed.
STEP_SEED_STRIDE = 1_000_003
REPORT_IMAGES = 8  # worst validation images pictured in best_model/report.html


def step_seed(seed: int, iteration: int) -> int:
    """The global RNG seed of one iteration (dropout, drop-path, random bases)."""
    return seed * STEP_SEED_STRIDE + iteration


def as_tensor(value) -> paddle.Tensor:
    """The DataLoader already hands out tensors; wrap only what is not one (no needless copy)."""
    return value if isinstance(value, paddle.Tensor) else paddle.to_tensor(value)


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


class Trainer:
    """Trains the model a config describes: builds, steps, loops.

    Args:
        cfg: the loaded config (needs model, train_dataset, optimizer, lr_scheduler, loss, iters,
            batch_size; val_dataset with ``do_eval``).
        options: run settings.
    """

    def __init__(self, cfg: Config, options: TrainOptions):
        self.cfg = cfg
        self.opts = options.check()
        self.rank, self.world = init_distributed()
        # What the console shows from here on goes to train.log too, once it opens (in train()).
        self.console = ConsoleCapture() if self.rank == 0 else None
        if self.console:
            weakref.finalize(self, self.console.detach)  # a trainer that never trains stops capturing too
        try:
            self.setup()
        except BaseException:
            if self.console:
                self.console.detach()
            if getattr(self, "checkpoints", None):
                self.checkpoints.close()
            raise

    def setup(self) -> None:
        """Model, data, optimization, the resumed state and the run's reports."""
        cfg, options = self.cfg, self.opts
        self.precision = Precision(options.precision, options.amp_level)
        paddle.seed(options.seed)
        np.random.seed(options.seed)
        self.checkpoints = CheckpointManager(options.save_dir, options.keep_checkpoint_max, writer=self.rank == 0)
        self.resume_from = self.checkpoints.find_resume(options.resume_model, options.overwrite)
        self.build_model()
        self.build_data()
        if self.resume_from:
            # Weights go in before an O2 cast to half precision, so they are read in float32.
            self.checkpoints.restore_model(self.model, self.resume_from)
        self.build_optimization()
        self.state = TrainState()
        if self.resume_from:
            self.state = self.checkpoints.restore(self.resume_from, self.trainables())
        global_batch = cfg.batch_size * self.world * options.accumulate_steps
        self.log = TrainLogger(options.save_dir, self.rank == 0, cfg.iters, options.log_iters, global_batch,
                               len(self.train_set) // global_batch, options.use_vdl, self.console,
                               hyper_parameters(cfg, options, global_batch))

    def build_model(self) -> None:
        """The model (first, so that its initial weights depend on the seed alone), with the config's
        pretrained weights unless a resumed checkpoint replaces them."""
        self.model = self.cfg.build_model(pretrained=not self.resume_from)
        # A top-level ``sync_bn: true`` in the config asks for the same.
        if self.opts.sync_bn or self.cfg.sync_bn:
            self.model = convert_sync_bn(self.model, self.world, paddle.get_device())

    def build_data(self) -> None:
        """The training (and, with ``do_eval``, validation) datasets, and the loss checked against the model."""
        self.train_set = self.cfg.build_dataset("train")
        self.train_set.file_list *= self.opts.repeats  # --repeats: each epoch passes over the samples that often
        self.val_set = self.cfg.build_dataset("val") if self.opts.do_eval else None
        self.loss = self.cfg.build_loss()
        self.loss.check_outputs(int(getattr(self.model, "num_outputs", 1)), type(self.model).__name__)

    def build_optimization(self) -> None:
        """Schedule, optimizer, loss scaler, the O2 cast, the EMA and the data-parallel wrapper."""
        self.lr = self.cfg.build_lr_scheduler()
        self.optimizer = self.cfg.build_optimizer(self.model, self.lr)
        self.scaler = self.precision.loss_scaler()
        self.model, self.optimizer = self.precision.decorate(self.model, self.optimizer)
        self.ema = ModelEMA(self.model, self.opts.ema_decay) if self.opts.use_ema else None
        self.net = paddle.DataParallel(self.model) if self.world > 1 else self.model

    def trainables(self) -> Trainables:
        """What a checkpoint saves and restores besides the counters."""
        return Trainables(self.model, self.optimizer, self.lr, self.opts.seed, self.scaler, self.ema)

    # ---- the loop -------------------------------------------------------------------------
    def train(self) -> TrainState:
        """Run from the current (or resumed) iteration to ``iters``; returns the final state."""
        self.checkpoints.prepare(self.cfg)
        self.model.train()
        batches = self.loader(self.state.iter)
        self.log.open(self.state.iter, self.state.train_log_bytes)
        try:
            with StopOnSignal() as stop:
                for iteration in range(self.state.iter + 1, self.cfg.iters + 1):
                    self.run_iteration(iteration, batches)
                    if iteration % self.opts.save_interval == 0 or iteration == self.cfg.iters:
                        self.evaluate_and_save(iteration)
                        if self.stop_early(iteration):
                            break
                    self.log.clock.restart()
                    self.check_signal(stop, iteration)
        finally:
            batches.close()  # stops the data-loading workers now
            self.log.close()
            self.checkpoints.close()
        return self.state

    def check_signal(self, stop: StopOnSignal, iteration: int) -> None:
        """Stop cleanly between iterations (never inside a save) once SIGINT or SIGTERM reached any rank."""
        signum = stop.requested(self.world)
        if signum and iteration < self.cfg.iters:
            raise interrupted(signum, iteration, self.checkpoints.last,
                              f"--resume_model auto --save_dir {self.opts.save_dir}")

    def stop_early(self, iteration: int) -> bool:
        """Whether ``--early_stop_intervals`` evaluations in a row fell short of the best mIoU (PaddleSeg's rule)."""
        patience = self.opts.early_stop_intervals
        if patience is None or self.state.evals_since_best < patience:
            return False
        self.log.info(f"Early stopping at iter {iteration}. The best mean IoU is {self.state.best_miou:.4f} "
                      f"(iteration {self.state.best_iter}, kept in best_model).")
        return True

    def loader(self, start_iter: int):
        """An endless loader over this rank's batches (``accumulate_steps`` micro-batches each),
        starting after ``start_iter`` batches."""
        sampler = TrainSampler(len(self.train_set), self.cfg.batch_size * self.opts.accumulate_steps, self.opts.seed,
                               self.rank, self.world, start_iter)
        return guarded_loader(SeededDataset(self.train_set), sampler, self.opts.num_workers, _collate,
                              use_shared_memory=False, worker_init_fn=worker_init)

    def run_iteration(self, iteration: int, batches: Iterator) -> None:
        """Fetch the batch, take the step, advance the schedule and record it."""
        images, labels = next_batch(batches, f"their batch of iteration {iteration}")
        self.log.clock.data_ready()
        paddle.seed(step_seed(self.opts.seed, iteration))
        lr = self.lr.get_lr()
        losses = self.step(as_tensor(images), as_tensor(labels), iteration)
        self.lr.step()
        self.state.iter = iteration
        self.log.iteration(iteration, losses, lr, self.state.skipped_steps)

    # ---- one step -------------------------------------------------------------------------
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
        with self.precision.autocast():
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
                f"checkpoint: {self.checkpoints.last or 'none yet'}. Lower the learning rate, add "
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
                self.state.skipped_steps += 1
                self.log.info(f"iteration {iteration}: the loss or the gradients are not finite; step skipped "
                              f"({self.state.skipped_steps} so far).", warning=True)
        self.optimizer.clear_grad()
        if self.ema and applied:
            self.ema.update(self.model)

    # ---- evaluation and checkpoints ------------------------------------------------------------
    def evaluate_and_save(self, iteration: int) -> None:
        """Evaluate (with ``do_eval``), then save ``iter_N`` and, on a new best mIoU, ``best_model``.

        Every rank evaluates its share of the validation set (the confusion matrices are summed
        across ranks); rank 0 writes.
        """
        result = self.evaluate(iteration) if self.val_set is not None else None
        improved = result is not None and self.state.record_evaluation(result["mIoU"], iteration)
        if result is not None:
            self.log.best(self.state.best_miou, self.state.best_iter)
        # Everything logged for this iteration is in train.log now; a resume from it cuts there.
        self.state.train_log_bytes = self.log.train_log_bytes()
        parts = self.trainables()
        self.checkpoints.save_iteration(iteration, parts, self.state)
        if improved:
            best = self.checkpoints.save_best(parts, self.state)
            if self.rank == 0:
                self.write_reports(result, best, iteration)

    def evaluate(self, iteration: int) -> Dict:
        """Evaluate on the validation set (with the EMA weights when kept); returns the metrics."""
        # Seeded as tools/val.py is, so models with random parts (SegNeXt's NMF bases) report the
        # same mIoU here as val.py on this checkpoint; training reseeds every step anyway.
        paddle.seed(self.opts.seed)
        weights = self.ema.applied(self.model) if self.ema else contextlib.nullcontext()
        with weights, self.precision.autocast():
            result = evaluate(self.model, self.val_set, self.cfg.test_config(), self.opts.num_workers,
                              print_detail=self.rank == 0, keep_worst=REPORT_IMAGES,
                              show_images=VDL_IMAGES if self.opts.use_vdl else 0)
        self.model.train()
        self.log.evaluation(iteration, result, self.val_set)
        return result

    def write_reports(self, result: Dict, folder: str, iteration: int) -> None:
        """The evaluation reports of a checkpoint folder: metrics, per-image records, report.html."""
        data = self.val_set
        write_reports(result, folder, data.class_names)
        write_html_report(result, folder, data.class_names, data.palette, data.ignore_index, data.img_channels,
                          title=f"best model: iteration {iteration}")
