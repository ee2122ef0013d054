"""Every shipped config loads, builds its datasets, model, loss and optimizer, and runs a tiny step."""

import glob
import os

import numpy as np
import paddle
import pytest
from conftest import ROOT

import layouts
from segkit.config import load_config

CONFIGS = sorted(
    os.path.relpath(p, ROOT)
    for p in glob.glob(os.path.join(ROOT, "configs", "**", "*.yml"), recursive=True)
    if "_base_" not in p
)


@pytest.fixture(scope="module")
def dataset_roots(tmp_path_factory, scenes_root):
    base = tmp_path_factory.mktemp("layouts")
    roots = {name: make(str(base / name)) for name, make in layouts.MAKERS.items()}
    roots["EmbeddedScenes"] = scenes_root
    return roots


def test_there_are_configs_for_every_family():
    folders = {p.split(os.sep)[1] for p in CONFIGS}
    assert {"quickstart", "segformer", "rtformer", "segnext", "hrvit"} <= folders


def test_every_family_has_a_config_for_every_dataset():
    """The 4 x 4 matrix: SegFormer, RTFormer, SegNeXt, HRViT on Cityscapes, ADE20K, CamVid, COCO-Stuff."""
    datasets = ("cityscapes", "ade20k", "camvid", "cocostuff")
    have = {(p.split(os.sep)[1], d) for p in CONFIGS for d in datasets if f"_{d}_" in os.path.basename(p)}
    missing = [(f, d) for f in ("segformer", "rtformer", "segnext", "hrvit") for d in datasets if (f, d) not in have]
    assert not missing


@pytest.mark.parametrize("path", CONFIGS)
def test_config_builds_and_steps(path, dataset_roots):
    raw = load_config(os.path.join(ROOT, path))
    opts = [f"{key}.dataset_root={dataset_roots[raw.data[key]['type']]}"
            for key in ("train_dataset", "val_dataset") if key in raw.data]
    cfg = load_config(os.path.join(ROOT, path), opts)
    train_set, val_set = cfg.build_dataset("train"), cfg.build_dataset("val")
    assert train_set[0]["img"].ndim == 3 and val_set[0]["label"].ndim == 2

    paddle.seed(0)
    # Building reads no file: pretrained weights (URLs, which cannot be fetched here) are applied
    # separately, and every one the config names is a well-formed spec.
    assert all(spec.location and spec.pretrained for spec in cfg.weights())
    model = cfg.build_model(pretrained=False)
    loss = cfg.build_loss()
    loss.check_outputs(model.num_outputs, type(model).__name__)
    optimizer = cfg.build_optimizer(model, cfg.build_lr_scheduler())
    model.train()
    images = paddle.randn([2, 3, 64, 96])
    labels = paddle.to_tensor(np.random.default_rng(0).integers(0, cfg.num_classes(), (2, 64, 96)))
    total, _ = loss(model(images), labels)
    total.backward()
    optimizer.step()
    assert np.isfinite(float(total))
    cfg.test_config()


@pytest.mark.parametrize("name, dataset, iters", [("segformer_b0_camvid_960x720_10k.yml", "CamVid", 10000),
                                                  ("segformer_b0_cocostuff_512x512_80k.yml", "COCOStuff", 80000)])
def test_segformer_camvid_and_cocostuff_keep_the_official_ade20k_recipe(name, dataset, iters):
    cfg = load_config(os.path.join(ROOT, "configs", "segformer", name)).data
    ade = load_config(os.path.join(ROOT, "configs", "segformer", "segformer_b0_ade20k_512x512_160k.yml")).data
    assert cfg["optimizer"] == ade["optimizer"] and cfg["lr_scheduler"] == ade["lr_scheduler"]
    assert cfg["model"] == ade["model"] and cfg["batch_size"] == ade["batch_size"] and cfg["iters"] == iters
    assert cfg["train_dataset"]["type"] == cfg["val_dataset"]["type"] == dataset
