"""Test helper: a tiny BatchNorm-free model, a tiny training config, and a tools/train.py entry point.

Run as a script (alone or under ``python -m paddle.distributed.launch``) it registers
``TinySegNet``, trains with the tools/train.py command line it is given and saves each rank's
final weights to ``save_dir/rank<R>.pdparams``, so a test can compare the ranks.
``SEGKIT_TEST_NAN_AT=<rank>:<iteration>`` makes that rank's loss NaN at that iteration.
"""

import os
import sys

import paddle
import paddle.nn.functional as F
from paddle import nn

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for path in (ROOT, os.path.join(ROOT, "tools")):
    if path not in sys.path:
        sys.path.insert(0, path)

from helpers import schedule_and_loss  # noqa: E402
from segkit.models.base import SegModel  # noqa: E402


class TinySegNet(SegModel):
    """Two convolutions and a 1x1 classifier: no batch statistics and no randomness, so
    data-parallel and accumulated runs can be compared with a single large batch."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.num_classes = num_classes
        self.backbone = nn.Sequential(nn.Conv2D(3, 8, 3, padding=1), nn.ReLU(),
                                      nn.Conv2D(8, 8, 3, stride=2, padding=1), nn.ReLU())
        self.head = nn.Conv2D(8, num_classes, 1)

    def forward(self, x: paddle.Tensor):
        logits = F.interpolate(self.head(self.backbone(x)), x.shape[2:], mode="bilinear", align_corners=False)
        return self.outputs([logits])


def write_tiny_config(path: str, dataset_root: str, optimizer: str, iters: int = 4, batch_size: int = 2) -> str:
    """A TinySegNet config on the embedded scenes at ``dataset_root``: 64x64 crops of 160x160
    images, so no pixel is padded (every rank has the same number of labelled pixels)."""
    text = f"""
batch_size: {batch_size}
iters: {iters}
model:
  type: TinySegNet
train_dataset:
  type: EmbeddedScenes
  dataset_root: {dataset_root}
  mode: train
  transforms:
    - type: RandomPaddingCrop
      crop_size: [64, 64]
    - type: RandomHorizontalFlip
    - type: Normalize
val_dataset:
  type: EmbeddedScenes
  dataset_root: {dataset_root}
  mode: val
  transforms:
    - type: Normalize
optimizer:
{optimizer}
""" + schedule_and_loss(0.01)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def poison_loss(trainer, iteration: int) -> None:
    """Make this process's loss NaN at ``iteration`` (one loss call per iteration without accumulation)."""
    real, calls = trainer.loss, {"n": 0}

    def loss(logits, label):
        calls["n"] += 1
        total, parts = real(logits, label)
        return (total * float("nan"), parts) if calls["n"] == iteration else (total, parts)

    trainer.loss = loss


def main(argv) -> None:
    import train as train_tool

    from segkit.registry import MODELS

    MODELS.register(TinySegNet)
    trainer = train_tool.build_trainer(argv)
    if os.environ.get("SEGKIT_TEST_NAN_AT"):
        rank, iteration = map(int, os.environ["SEGKIT_TEST_NAN_AT"].split(":"))
        if trainer.rank == rank:
            poison_loss(trainer, iteration)
    trainer.train()
    paddle.save(trainer.model.state_dict(), os.path.join(trainer.opts.save_dir, f"rank{trainer.rank}.pdparams"))


if __name__ == "__main__":
    main(sys.argv[1:])
