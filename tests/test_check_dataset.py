"""check_dataset: every kind of label problem is found and named, with a fix, and the shipped
base dataset configs build on tiny copies of their layouts."""

import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from PIL import Image

import segkit.datasets  # noqa: F401  (registers the datasets)
from segkit.data_check import check_label, format_report, scan_dataset, suggest_fix
from segkit.errors import DatasetError
from segkit.registry import DATASETS, build

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def save_image(path, h=12, w=16):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    cv2.imwrite(str(path), np.zeros((h, w, 3), np.uint8))


def save_label(path, array, **kw):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path, **kw)


@pytest.fixture
def messy(tmp_path):
    """A 3-class file-list dataset with one of each problem next to two clean labels."""
    good = np.zeros((12, 16), np.uint8)
    good[:, 8:] = 1
    good[0, 0] = 255
    labels = {
        "ok0.png": good,
        "ok1.png": np.full((12, 16), 2, np.uint8),
        "value200.png": np.where(good == 1, 200, 0).astype(np.uint8),
        "small.png": np.zeros((10, 16), np.uint8),
        "rgb.png": np.zeros((12, 16, 3), np.uint8),
        "binary.png": np.where(good == 1, 255, 0).astype(np.uint8),
        "lossy.jpg": np.zeros((12, 16), np.uint8),
    }
    lines = []
    for i, (name, array) in enumerate(labels.items()):
        save_image(tmp_path / "img" / f"{i}.png")
        save_label(tmp_path / "ann" / name, array)
        lines.append(f"img/{i}.png ann/{name}")
    pal = Image.fromarray(good, mode="L").convert("P")
    pal.save(tmp_path / "ann" / "ok0.png")  # a palette PNG: fine, reported for information
    (tmp_path / "train.txt").write_text("\n".join(lines) + "\n")
    return tmp_path


def messy_dataset(root):
    return build({"type": "Dataset", "mode": "train", "dataset_root": str(root), "num_classes": 3,
                  "train_path": "train.txt", "transforms": []}, DATASETS, where="train_dataset")


@pytest.mark.parametrize("workers", [0, 2])
def test_scan_finds_every_problem(messy, workers):
    report = scan_dataset(messy_dataset(messy), num_workers=workers)
    name = lambda paths: sorted(os.path.basename(p) for p in paths)  # noqa: E731
    assert report.num_samples == 7
    assert name(report.bad_values) == ["value200.png"]
    assert report.bad_values[str(messy / "ann" / "value200.png")] == [200]
    assert name(report.size_mismatch) == ["small.png"]
    assert name(report.not_single_channel) == ["rgb.png"]
    assert name(report.binary_masks) == ["binary.png"]
    assert name(report.jpeg_labels) == ["lossy.jpg"]
    assert name(report.palette_labels) == ["ok0.png"]
    assert not report.ok
    # histogram: class 0/1/2 pixels over the labels with in-range values
    assert report.class_pixels.tolist() == [96 * 3 + 95 + 160 + 96, 96, 192]
    assert report.ignore_pixels == 1 + 96
    text = format_report(report, ["a", "b", "c"], title="train")
    for expected in ("value200.png: [200]", "small.png: label (10, 16) vs image (12, 16)", "rgb.png",
                     "lossy.jpg", "binary.png", "status: PROBLEMS FOUND", "fix:", "  2 c"):
        assert expected in text, expected


def test_scan_applies_dataset_mapping(tmp_path):
    root = tmp_path / "ADEChallengeData2016"
    for split in ("training", "validation"):
        os.makedirs(root / "images" / split)
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "images" / split / "a.jpg")
        label = np.arange(64, dtype=np.uint8).reshape(8, 8) * 3  # stored ids 0..189
        save_label(root / "annotations" / split / "a.png", label)
    ds = build({"type": "ADE20K", "dataset_root": str(root), "mode": "val", "transforms": []},
               DATASETS, where="val_dataset")
    report = scan_dataset(ds)
    assert report.ignore_pixels == 1  # stored 0 -> 255
    assert report.class_pixels[2] == 1  # stored 3 -> class 2
    assert list(report.bad_values.values()) == [[v - 1 for v in range(153, 190, 3)]]


def test_suggestions():
    assert "num_classes: 2" in suggest_fix([0, 255], num_classes=2, ignore_index=0)
    assert "reduce-zero-label" in suggest_fix([0, 1, 2, 3], num_classes=3, ignore_index=255)
    assert "at least 201" in suggest_fix([0, 5, 200], num_classes=19, ignore_index=255)
    with pytest.raises(DatasetError, match=r"f\.png.*-1.*\[0, 3\)"):
        check_label(np.array([[0, -1]]), 3, 255, "f.png")
    check_label(np.array([[0, 2, 255]]), 3, 255, "f.png")  # valid ids and ignore pass


def write_config(path, text):
    path.write_text(text)
    return str(path)


def test_cli_reports_and_exit_codes(messy, tmp_path):
    cfg = write_config(tmp_path / "c.yml", f"""
train_dataset:
  type: Dataset
  dataset_root: {messy}
  num_classes: 3
  train_path: train.txt
  mode: train
  transforms: [{{type: Normalize}}]
""")
    script = os.path.join(REPO, "tools", "check_dataset.py")
    run = subprocess.run([sys.executable, script, "--config", cfg], capture_output=True, text=True, timeout=120)
    assert run.returncode == 1, run.stderr
    assert "value200.png: [200]" in run.stdout and "val_dataset: not in the config" in run.stdout
    os.remove(messy / "ann" / "ok1.png")
    run = subprocess.run([sys.executable, script, "--config", cfg], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "ok1.png" in run.stderr


BASE_CONFIGS = {
    "cityscapes": "data/cityscapes",
    "cityscapes_1024x1024": "data/cityscapes",
    "camvid": "data/camvid",
    "ade20k": "data/ADEChallengeData2016",
    "cocostuff": "data/cocostuff",
}


def tiny_layout(name, root):
    """Two images per split in the official layout of the base config ``name``."""
    for split in ("train", "val"):
        for i in range(2):
            if name.startswith("cityscapes"):
                stem = f"x_{i:06d}_000019"
                save_image(root / "leftImg8bit" / split / "x" / f"{stem}_leftImg8bit.png", 64, 128)
                save_label(root / "gtFine" / split / "x" / f"{stem}_gtFine_labelTrainIds.png",
                           np.full((64, 128), 18, np.uint8))
            elif name == "camvid":
                save_image(root / split / f"{i}.png", 72, 96)
                save_label(root / f"{split}annot" / f"{i}.png", np.full((72, 96), 11, np.uint8))
            else:
                folder = {"ade20k": {"train": "training", "val": "validation"},
                          "cocostuff": {"train": "train2017", "val": "val2017"}}[name][split]
                os.makedirs(root / "images" / folder, exist_ok=True)
                Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(root / "images" / folder / f"{i}.jpg")
                save_label(root / "annotations" / folder / f"{i}.png", np.full((48, 64), 1, np.uint8))


@pytest.mark.parametrize("name", sorted(BASE_CONFIGS))
def test_base_configs_build_and_load(name, tmp_path):
    from segkit.config import load_config

    tiny_layout(name, tmp_path)
    opts = [f"train_dataset.dataset_root={tmp_path}", f"val_dataset.dataset_root={tmp_path}"]
    cfg = load_config(os.path.join(REPO, "configs", "_base_", f"{name}.yml"), opts)
    assert cfg.data["train_dataset"]["dataset_root"] != BASE_CONFIGS[name]
    train, val = cfg.build_dataset("train"), cfg.build_dataset("val")
    crop = cfg.data["train_dataset"]["transforms"][1]["crop_size"]
    s = train[0]
    assert s["img"].shape == (3, crop[1], crop[0]) and s["label"].shape == (crop[1], crop[0])
    v = val[1]
    assert v["label"].shape == tuple(np.asarray(Image.open(val.file_list[1][1])).shape)
    assert scan_dataset(val).ok
