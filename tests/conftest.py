"""Shared fixtures: a generated copy of the embedded dataset, a tiny training config, and the tiny
models of ``deploy_models`` exported once per session."""

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


class TinyExports:
    """``deploy_models``' tiny models, each exported once (dynamic batch and image size, logits out)
    into ``base`` on first use, with one Paddle Inference predictor per export. Exporting the tiny
    HRViT (dy2static) takes about 12 s and the first run of a predictor on it about 4 s, so the tests
    that run that export share it."""

    def __init__(self, base):
        self.base = base
        self.made = {}
        self.predictors = {}

    def get(self, family: str):
        """(eval-mode model, export folder with model.json and model.pdiparams) of ``family``."""
        if family not in self.made:
            from deploy_models import tiny_model

            from segkit.engine.export import export_model

            model = tiny_model(family)
            save_dir = str(self.base / family)
            export_model(model, save_dir, input_shape=[-1, 3, -1, -1], output_op="none")
            self.made[family] = model, save_dir
        return self.made[family]

    def predictor(self, family: str):
        """The plain-kernel Paddle Inference predictor on ``family``'s export (``helpers.paddle_predictor``)."""
        if family not in self.predictors:
            from helpers import paddle_predictor

            self.predictors[family] = paddle_predictor(self.get(family)[1])
        return self.predictors[family]


@pytest.fixture(scope="session")
def tiny_exports(tmp_path_factory):
    """The session's ``TinyExports``."""
    return TinyExports(tmp_path_factory.mktemp("tiny_exports"))


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
