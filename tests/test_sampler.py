"""The per-sample seeding of the training data: augmentation depends on a sample's seed alone."""

import threading
import time

import numpy as np

from segkit.engine.sampler import SeededDataset


class SlowRandomDataset:
    """Each sample draws from NumPy's global generator several times, pausing between draws, so
    that two threads reading samples at once would interleave their draws without a lock."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index):
        draws = []
        for _ in range(5):
            draws.append(np.random.rand())
            time.sleep(0.002)
        return {"img": np.array(draws), "label": np.array([index])}


def test_two_loader_threads_at_once_draw_what_each_seed_alone_draws():
    dataset = SeededDataset(SlowRandomDataset())
    alone = {seed: dataset[(seed, 0)][0] for seed in (1, 2)}
    together = {}

    def read(seed):
        together[seed] = [dataset[(seed, 0)][0] for _ in range(10)]

    threads = [threading.Thread(target=read, args=(seed,)) for seed in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for seed in (1, 2):
        for draws in together[seed]:
            np.testing.assert_array_equal(draws, alone[seed])
