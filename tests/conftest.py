"""Shared fixtures: a generated copy of the embedded dataset and a tiny training config."""

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tools"))


@pytest.fixture(scope="session")
def scenes_root(tmp_path_factory):
    """The embedded dataset, generated once per test session into a temporary folder."""
    from segkit.datasets.embedded import generate

    root = str(tmp_path_factory.mktemp("scenes"))
    generate(root)
    return root


def tiny_opts(scenes_root, iters=4, crop=64, batch_size=2):
    """--opts turning the quickstart config into a seconds-long run on the generated dataset."""
    return [
        f"train_dataset.dataset_root={scenes_root}",
        f"val_dataset.dataset_root={scenes_root}",
        f"train_dataset.transforms.1.crop_size=[{crop},{crop}]",
        f"iters={iters}",
        f"batch_size={batch_size}",
        "lr_scheduler.warmup_iters=1",
    ]


QUICKSTART = os.path.join(ROOT, "configs", "quickstart", "segformer_b0_scenes.yml")


class Interrupted(Exception):
    """Raised by ``interrupt_at`` in place of a training step."""


def interrupt_at(trainer, iteration: int) -> None:
    """Make ``trainer`` raise ``Interrupted`` when it reaches ``iteration`` (as a crash would)."""
    original_step = trainer.step

    def step(images, labels, at):
        if at == iteration:
            raise Interrupted()
        return original_step(images, labels, at)

    trainer.step = step
