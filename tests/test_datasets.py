"""Datasets: the generic file-list Dataset and the four benchmark layouts, built as tiny copies
generated here; pairing, label mapping, class names, palettes and the errors for bad data."""

import os
import pickle

import cv2
import numpy as np
import paddle
import pytest
from PIL import Image

import segkit.datasets  # noqa: F401  (registers the datasets)
from segkit.datasets.base import Dataset, default_palette
from segkit.errors import ConfigError, DatasetError
from segkit.registry import DATASETS, build

TRAIN_T = [{"type": "RandomPaddingCrop", "crop_size": [32, 24]}, {"type": "Normalize"}]
VAL_T = [{"type": "Resize", "target_size": [40, 30]}, {"type": "Normalize"}]


def write_image(path, h, w, seed=0):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    img = np.random.default_rng(seed).integers(0, 256, size=(h, w, 3)).astype(np.uint8)
    cv2.imwrite(str(path), img)
    return img


def write_label(path, label, palette=False):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    im = Image.fromarray(label.astype(np.uint8), mode="L")
    if palette:
        im = im.convert("P")
        im.putpalette([v for i in range(256) for v in (i, i, i)])
    im.save(path)


@pytest.fixture
def generic(tmp_path):
    """A file-list dataset: 3 train pairs, 2 val pairs, 4 classes + 255."""
    rng = np.random.default_rng(0)
    lines = {"train": [], "val": []}
    for split, n in (("train", 3), ("val", 2)):
        for i in range(n):
            write_image(tmp_path / "img" / f"{split}{i}.jpg", 20, 28, seed=i)
            label = rng.integers(0, 4, size=(20, 28))
            label[0, :5] = 255
            write_label(tmp_path / "ann" / f"{split}{i}.png", label, palette=(i == 0))
            lines[split].append(f"img/{split}{i}.jpg ann/{split}{i}.png")
    for split, entries in lines.items():
        (tmp_path / f"{split}.txt").write_text("\n".join(entries) + "\n")
    return tmp_path


def make(root, mode="train", transforms=TRAIN_T, **kw):
    args = dict(
        type="Dataset",
        mode=mode,
        dataset_root=str(root),
        num_classes=4,
        transforms=transforms,
        train_path=str(root / "train.txt"),
        val_path="val.txt",  # relative to dataset_root
    )
    args.update(kw)
    return build(args, DATASETS, where="train_dataset")


def test_generic_train_sample_is_batchable_numpy(generic):
    ds = make(generic)
    assert len(ds) == 3 and ds.num_classes == 4 and ds.ignore_index == 255
    assert ds.class_names == ["class_0", "class_1", "class_2", "class_3"]
    assert ds.palette == default_palette(4)
    s = ds[0]
    assert set(s) == {"img", "label", "img_path"}
    assert s["img"].shape == (3, 24, 32) and s["img"].dtype == np.float32
    assert s["label"].shape == (24, 32) and s["label"].dtype == np.int64
    assert set(np.unique(s["label"])) <= {0, 1, 2, 3, 255}
    pickle.dumps(s)  # workers send samples through pipes


def test_generic_val_keeps_original_label_and_trans_info(generic):
    ds = make(generic, mode="val", transforms=VAL_T)
    s = ds[1]
    assert s["img"].shape == (3, 30, 40)
    assert s["label"].shape == (20, 28) and s["label"].dtype == np.int64
    assert s["trans_info"] == [("resize", (20, 28))]
    assert s["img_path"].endswith("val1.jpg")


def test_generic_loads_through_paddle_dataloader_with_workers(generic):
    ds = make(generic)
    loader = paddle.io.DataLoader(ds, batch_size=3, num_workers=1, shuffle=False)
    batch = next(iter(loader))
    assert list(batch["img"].shape) == [3, 3, 24, 32]
    assert list(batch["label"].shape) == [3, 24, 32]


def test_default_palette_is_the_voc_map():
    # the first VOC colours everybody knows: background, aeroplane, bicycle, bird, boat
    assert default_palette(5) == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 128]]
    assert len({tuple(c) for c in default_palette(256)}) == 256


def test_missing_root_list_and_files_are_named(generic, tmp_path):
    with pytest.raises(DatasetError, match="no_such_root"):
        make(tmp_path / "no_such_root")
    with pytest.raises(DatasetError, match="missing.txt"):
        make(generic, train_path="missing.txt")
    with pytest.raises(DatasetError, match="val_path"):
        make(generic, mode="val", val_path=None)
    os.remove(generic / "ann" / "train1.png")
    with pytest.raises(DatasetError, match="train1.png"):
        make(generic)
    (generic / "bad.txt").write_text("img/train0.jpg\n")
    with pytest.raises(DatasetError, match="bad.txt:1"):
        make(generic, train_path="bad.txt")
    with pytest.raises(ConfigError, match="mode"):
        make(generic, mode="training")
    with pytest.raises(ConfigError, match="num_class"):
        build({"type": "Dataset", "mode": "train", "dataset_root": str(generic), "transforms": [],
               "num_class": 4}, DATASETS, where="train_dataset")


def test_bad_label_values_stop_with_file_and_values(generic):
    label = np.zeros((20, 28), np.uint8)
    label[3, 3] = 200
    label[4, 4] = 7
    write_label(generic / "ann" / "train2.png", label)
    ds = make(generic)
    ds[0]
    with pytest.raises(DatasetError, match=r"train2\.png.*7, 200.*num_classes"):
        ds[2]


def test_label_size_mismatch_is_named(generic):
    write_label(generic / "ann" / "val0.png", np.zeros((21, 28), np.uint8))
    ds = make(generic, mode="val", transforms=VAL_T)
    with pytest.raises(DatasetError, match=r"val0\.png is 28x21 .* image is 28x20"):
        ds[0]


def test_rgb_label_is_rejected(generic):
    Image.fromarray(np.zeros((20, 28, 3), np.uint8)).save(generic / "ann" / "train0.png")
    with pytest.raises(DatasetError, match="RGB"):
        make(generic)[0]


def test_binary_mask_suggestion(generic):
    label = np.zeros((20, 28), np.uint8)
    label[5:, :] = 255
    write_label(generic / "ann" / "train0.png", label)
    ds = make(generic, ignore_index=0, num_classes=2)
    with pytest.raises(DatasetError, match="0/255 binary masks"):
        ds[0]


def test_edge_mask(generic):
    ds = make(generic, edge=True)
    s = ds[0]
    assert s["edge"].shape == (1, 24, 32) and set(np.unique(s["edge"])) <= {0, 1}
