"""A deterministic, resumable, distributed training sampler.

Each epoch's order is a permutation drawn from ``(seed, epoch)``; each rank takes every
``world_size``-th batch of it. Every index is paired with a per-sample seed, and the dataset wrapper
seeds NumPy and ``random`` with it before the transforms run. The augmentation of a sample is
therefore a function of (seed, epoch, position) alone: the same with 0 or 8 workers, and the same
after a resume, which starts the stream at the iteration where the run stopped.
"""

import os
import random
import threading
from typing import Iterator, List, Tuple

import numpy as np
import paddle

from segkit.engine.loader import SampleFailure, load_sample
from segkit.errors import ConfigError


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of sample ``index``'s transforms in ``epoch`` of a run seeded with ``seed``."""
    return int(np.random.default_rng([seed, epoch, index]).integers(2**31))


# The transforms draw from the process-wide NumPy and ``random`` generators. Seeding and drawing happen
# under this lock, so a sample's augmentation stays a function of its seed even when two loader threads
# run at once (a finished trainer's prefetch thread beside a new one in the same process).
_GLOBAL_RNG = threading.Lock()


def _fresh_lock_in_child() -> None:
    """A forked worker starts with an unheld lock, whatever a thread of its parent held at the fork."""
    global _GLOBAL_RNG
    _GLOBAL_RNG = threading.Lock()


os.register_at_fork(after_in_child=_fresh_lock_in_child)


def seed_everything(seed: int) -> None:
    """Seed NumPy's and Python's global generators, which the transforms draw from."""
    np.random.seed(seed)
    random.seed(seed)


class TrainSampler:
    """Endless batches of ``(sample_seed, index)`` pairs for one rank.

    Args:
        num_samples: dataset length.
        batch_size: samples per batch on this rank.
        seed: the run's seed.
        rank: this process's rank.
        world_size: number of processes.
        start_iter: number of batches already consumed (for resuming).
    """

    def __init__(self, num_samples: int, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1, start_iter: int = 0):
        self.global_batch = batch_size * world_size
        if num_samples < self.global_batch:
            raise ConfigError(
                f"batch_size: the training set has {num_samples} samples, fewer than one global batch "
                f"({batch_size} per process, accumulated micro-batches included, x {world_size} processes). "
                "Lower batch_size (or --accumulate_steps), or add training samples.",
                key="batch_size",
            )
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.batches_per_epoch = num_samples // self.global_batch  # drop_last
        self.start_iter = start_iter

    def __len__(self) -> int:
        return self.batches_per_epoch

    def epoch_of(self, iteration: int) -> int:
        """The epoch (0-based) that the ``iteration``-th batch (0-based) belongs to."""
        return iteration // self.batches_per_epoch

    def batch(self, iteration: int) -> List[Tuple[int, int]]:
        """The ``(sample_seed, index)`` pairs of the ``iteration``-th batch on this rank."""
        epoch, step = divmod(iteration, self.batches_per_epoch)
        order = np.random.default_rng([self.seed, epoch]).permutation(self.num_samples)
        start = step * self.global_batch + self.rank * self.batch_size
        indices = order[start:start + self.batch_size]
        return [(sample_seed(self.seed, epoch, int(i)), int(i)) for i in indices]

    def __iter__(self) -> Iterator[List[Tuple[int, int]]]:
        iteration = self.start_iter
        while True:
            yield self.batch(iteration)
            iteration += 1


class SeededDataset(paddle.io.Dataset):
    """Wraps a dataset so that ``ds[(seed, i)]`` runs sample ``i``'s transforms under ``seed``."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        seed, index = key
        with _GLOBAL_RNG:
            seed_everything(seed)
            sample = load_sample(self.dataset, index)
        return sample if isinstance(sample, SampleFailure) else (sample["img"], sample["label"])
