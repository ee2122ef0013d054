"""The README's "Adding a dataset or a model" section, followed end to end.

The code blocks of its "A dataset with a fixed layout" and "A model" parts are run as written (so
the README cannot drift from what works), then a config names the new dataset and model and the
tools train, evaluate, fine-tune through ``pretrained`` and predict with them.
"""

import os
import re
from typing import Any, List

import numpy as np
import paddle
import pytest
from conftest import ROOT
from PIL import Image
from paddle import nn

import predict as predict_tool
import train as train_tool
import val as val_tool
from segkit.config import load_config
from segkit.datasets.base import SegDataset, Transforms, list_files, pair_files, require_dir
from segkit.models.base import Backbone, SegModel
from segkit.registry import BACKBONES, DATASETS, MODELS
from segkit.weights import Tolerance


def readme_blocks(*headings: str) -> List[str]:
    """The ```python blocks under the given ``###`` headings of the README."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    blocks = []
    for heading in headings:
        section = text.split(f"### {heading}\n", 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]
        blocks += re.findall(r"```python\n(.*?)```", section, re.S)
    return blocks


@pytest.fixture
def extended(monkeypatch):
    """Registries with the README's dataset and model added (and removed again afterwards)."""
    for registry in (DATASETS, BACKBONES, MODELS):
        monkeypatch.setattr(registry, "_items", dict(registry._items))
    namespace = dict(os=os, List=List, Any=Any, nn=nn, SegDataset=SegDataset, SegModel=SegModel, Tolerance=Tolerance,
                     Transforms=Transforms, Backbone=Backbone,
                     DATASETS=DATASETS, BACKBONES=BACKBONES, MODELS=MODELS, list_files=list_files,
                     require_dir=require_dir, pair_files=pair_files)
    blocks = readme_blocks("A dataset with a fixed layout", "A model")
    assert len(blocks) == 2
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)
    return namespace


def make_dataset(root: str, count: int = 6) -> None:
    rng = np.random.default_rng(0)
    for folder in ("images", "labels"):
        os.makedirs(os.path.join(root, folder))
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), np.uint8)).save(os.path.join(root, "images", f"{i}.png"))
        Image.fromarray(rng.integers(0, 3, (40, 48), np.uint8)).save(os.path.join(root, "labels", f"{i}.png"))


def write_config(path: str, root: str, model_extra: str = "") -> str:
    dataset = "{{type: MyScenes, dataset_root: {root}, mode: {mode}, transforms: [{{type: Normalize}}]}}"
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"""batch_size: 2
iters: 2
train_dataset: {dataset.format(root=root, mode="train")}
val_dataset: {dataset.format(root=root, mode="val")}
model:
  type: TinySeg
  backbone: {{type: TinyNet, width: 8}}
{model_extra}optimizer: {{type: SGD}}
lr_scheduler: {{type: PolynomialDecay, learning_rate: 0.01, end_lr: 0.0, power: 1.0}}
loss: {{types: [{{type: CrossEntropyLoss}}], coef: [1]}}
""")
    return path


@pytest.mark.timeout(300)
def test_readme_dataset_and_model_train_evaluate_finetune_and_predict(extended, tmp_path, capsys):
    root = str(tmp_path / "my_scenes")
    make_dataset(root)
    config = write_config(str(tmp_path / "tiny.yml"), root)
    run = str(tmp_path / "run")
    train_tool.main(["--config", config, "--save_dir", run, "--do_eval", "--save_interval", "2", "--log_iters", "1"])
    assert os.path.isfile(os.path.join(run, "best_model", "model.pdparams"))
    assert "[TRAIN] epoch: 1, iter: 2/2" in capsys.readouterr().out

    # Fine-tuning on 5 classes from the 3-class checkpoint: the classifier is the named difference.
    finetune = write_config(str(tmp_path / "finetune.yml"), root,
                            f"  num_classes: 5\n  pretrained: {os.path.join(run, 'best_model')}\n")
    model = load_config(finetune).build_model()
    trained = paddle.load(os.path.join(run, "best_model", "model.pdparams"))
    np.testing.assert_array_equal(model.backbone.stem.weight.numpy(), trained["backbone.stem.weight"].numpy())
    assert model.classifier.weight.shape == [5, 8, 1, 1]

    val_tool.main(["--config", config, "--model_path", os.path.join(run, "iter_2"), "--save_dir", str(tmp_path / "val")])
    assert "[EVAL] #Images: 6" in capsys.readouterr().out
    out = tmp_path / "predicted"
    predict_tool.main(["--config", config, "--model_path", os.path.join(run, "iter_2"),
                       "--image_path", os.path.join(root, "images", "0.png"), "--save_dir", str(out)])
    assert np.asarray(Image.open(out / "pseudo_color_prediction" / "0.png")).max() < 3
