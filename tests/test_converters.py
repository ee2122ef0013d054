"""Converters: the official id tables on inputs holding every uint8 id, resumability, parallel
runs, and file-list creation feeding the generic Dataset."""

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from segkit.datasets.cocostuff import CLASS_NAMES as COCO_NAMES
from segkit.datasets.convert import (
    cityscapes_tasks,
    cocostuff_tasks,
    find_pairs,
    run_tasks,
    split_pairs,
    write_file_list,
)
from segkit.errors import DatasetError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# cityscapesScripts labels.py: (name, id, trainId); trainId 255 = ignored.
CITYSCAPES_LABELS = [
    ("unlabeled", 0, 255), ("ego vehicle", 1, 255), ("rectification border", 2, 255),
    ("out of roi", 3, 255), ("static", 4, 255), ("dynamic", 5, 255), ("ground", 6, 255),
    ("road", 7, 0), ("sidewalk", 8, 1), ("parking", 9, 255), ("rail track", 10, 255),
    ("building", 11, 2), ("wall", 12, 3), ("fence", 13, 4), ("guard rail", 14, 255),
    ("bridge", 15, 255), ("tunnel", 16, 255), ("pole", 17, 5), ("polegroup", 18, 255),
    ("traffic light", 19, 6), ("traffic sign", 20, 7), ("vegetation", 21, 8), ("terrain", 22, 9),
    ("sky", 23, 10), ("person", 24, 11), ("rider", 25, 12), ("car", 26, 13), ("truck", 27, 14),
    ("bus", 28, 15), ("caravan", 29, 255), ("trailer", 30, 255), ("train", 31, 16),
    ("motorcycle", 32, 17), ("bicycle", 33, 18),
]  # fmt: skip

# COCO thing categories by their official 1-based id (the gaps are ids without a category);
# stuffthingmaps store id - 1, and stuff classes 92..182 follow in order.
COCO_THINGS = {
    1: "person", 2: "bicycle", 3: "car", 4: "motorcycle", 5: "airplane", 6: "bus", 7: "train",
    8: "truck", 9: "boat", 10: "traffic light", 11: "fire hydrant", 13: "stop sign",
    14: "parking meter", 15: "bench", 16: "bird", 17: "cat", 18: "dog", 19: "horse", 20: "sheep",
    21: "cow", 22: "elephant", 23: "bear", 24: "zebra", 25: "giraffe", 27: "backpack",
    28: "umbrella", 31: "handbag", 32: "tie", 33: "suitcase", 34: "frisbee", 35: "skis",
    36: "snowboard", 37: "sports ball", 38: "kite", 39: "baseball bat", 40: "baseball glove",
    41: "skateboard", 42: "surfboard", 43: "tennis racket", 44: "bottle", 46: "wine glass",
    47: "cup", 48: "fork", 49: "knife", 50: "spoon", 51: "bowl", 52: "banana", 53: "apple",
    54: "sandwich", 55: "orange", 56: "broccoli", 57: "carrot", 58: "hot dog", 59: "pizza",
    60: "donut", 61: "cake", 62: "chair", 63: "couch", 64: "potted plant", 65: "bed",
    67: "dining table", 70: "toilet", 72: "tv", 73: "laptop", 74: "mouse", 75: "remote",
    76: "keyboard", 77: "cell phone", 78: "microwave", 79: "oven", 80: "toaster", 81: "sink",
    82: "refrigerator", 84: "book", 85: "clock", 86: "vase", 87: "scissors", 88: "teddy bear",
    89: "hair drier", 90: "toothbrush",
}  # fmt: skip
COCO_STUFF_SPOTS = {92: "banner", 93: "blanket", 106: "clouds", 149: "road", 157: "sky-other", 182: "wood"}


def every_id_image() -> np.ndarray:
    return np.arange(256, dtype=np.uint8).reshape(16, 16)


def save(path, array):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path)


@pytest.fixture
def cityscapes_raw(tmp_path):
    for split, city, n in (("train", "aachen", 3), ("val", "lindau", 2)):
        for i in range(n):
            ids = np.roll(every_id_image(), i)
            save(str(tmp_path / "gtFine" / split / city / f"{city}_{i:06d}_000019_gtFine_labelIds.png"), ids)
    return tmp_path


def test_cityscapes_table_on_every_id(cityscapes_raw):
    tasks = cityscapes_tasks(str(cityscapes_raw))
    assert len(tasks) == 5
    assert run_tasks(tasks, num_workers=1) == 5
    expected = np.full(256, 255)
    for _, label_id, train_id in CITYSCAPES_LABELS:
        expected[label_id] = train_id
    for src, dst, _ in tasks:
        assert dst.endswith("_gtFine_labelTrainIds.png") and os.path.dirname(src) == os.path.dirname(dst)
        ids = np.asarray(Image.open(src))
        np.testing.assert_array_equal(np.asarray(Image.open(dst)), expected[ids])


def test_cocostuff_table_on_every_id(tmp_path):
    for split in ("train2017", "val2017"):
        save(str(tmp_path / "annotations" / split / "000000000139.png"), every_id_image())
    tasks = cocostuff_tasks(str(tmp_path))
    assert run_tasks(tasks, num_workers=2) == 2
    out = np.asarray(Image.open(tasks[0][1])).reshape(-1)  # out[i] = train id of stored id i
    assert out[255] == 255 and (out[182:] == 255).all()
    used = out[out != 255]
    np.testing.assert_array_equal(np.sort(used), np.arange(171))  # 171 contiguous ids, each once
    for coco_id in range(1, 92):  # thing ids without a category are ignored
        if coco_id not in COCO_THINGS:
            assert out[coco_id - 1] == 255, coco_id
    for coco_id, name in {**COCO_THINGS, **COCO_STUFF_SPOTS}.items():
        assert COCO_NAMES[out[coco_id - 1]] == name, (coco_id, name)
    # a rerun finds every output in place and skips the outputs of the first run as inputs
    assert len(cocostuff_tasks(str(tmp_path))) == 2


def test_converters_resume_and_parallel_match_serial(cityscapes_raw, tmp_path):
    tasks = cityscapes_tasks(str(cityscapes_raw))
    done = tasks[0][1]
    save(done, np.full((16, 16), 77, np.uint8))  # pretend a previous run wrote this one
    assert run_tasks(tasks, num_workers=2) == 4
    assert (np.asarray(Image.open(done)) == 77).all()  # resumed: not rewritten
    assert run_tasks(tasks, num_workers=2) == 0
    assert not [p for p in cityscapes_raw.rglob("*.tmp*")]
    os.remove(done)
    parallel = [np.asarray(Image.open(t[1])) for t in tasks[1:]]
    for t in tasks[1:]:
        os.remove(t[1])
    assert run_tasks(tasks, num_workers=1) == 5
    for t, p in zip(tasks[1:], parallel):
        np.testing.assert_array_equal(np.asarray(Image.open(t[1])), p)


def test_converter_cli_and_errors(cityscapes_raw, tmp_path):
    script = os.path.join(REPO, "tools", "data", "convert_cityscapes.py")
    run = subprocess.run([sys.executable, script, str(cityscapes_raw), "--num_workers", "2"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "5 written" in run.stdout
    run = subprocess.run([sys.executable, script, str(tmp_path / "nowhere")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "gtFine" in run.stderr
    rgb = tmp_path / "rgb" / "gtFine" / "train" / "x" / "x_000000_000000_gtFine_labelIds.png"
    save(str(rgb), np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(DatasetError, match="single-channel"):
        run_tasks(cityscapes_tasks(str(tmp_path / "rgb")))


def test_file_lists_pair_by_stem_and_split(tmp_path):
    for i in range(10):
        save(str(tmp_path / "images" / "sub" / f"im{i}.png"), np.zeros((8, 8, 3), np.uint8))
        save(str(tmp_path / "labels" / "sub" / f"im{i}_mask.png"), np.zeros((8, 8), np.uint8))
    pairs = find_pairs(str(tmp_path), "images", "labels", ".png", "_mask.png")
    assert len(pairs) == 10
    assert all(img.replace("images", "labels").replace(".png", "_mask.png") == lab for img, lab in pairs)
    train, val = split_pairs(pairs, [0.8, 0.2], seed=1)
    assert len(train) == 8 and len(val) == 2 and sorted(train + val) == sorted(pairs)
    assert split_pairs(pairs, [0.8, 0.2], seed=1) == [train, val]
    os.remove(tmp_path / "labels" / "sub" / "im3_mask.png")
    with pytest.raises(DatasetError, match="im3.png"):
        find_pairs(str(tmp_path), "images", "labels", ".png", "_mask.png")
    with pytest.raises(DatasetError, match="separator"):
        write_file_list(str(tmp_path / "x.txt"), [("a b.png", "c.png")], " ")


def test_create_file_list_cli_feeds_generic_dataset(tmp_path):
    from segkit.registry import DATASETS, build

    for split, n in (("train", 3), ("val", 2)):
        for i in range(n):
            save(str(tmp_path / split / f"f{i}.png"), np.zeros((8, 10, 3), np.uint8))
            save(str(tmp_path / f"{split}annot" / f"f{i}.png"), np.full((8, 10), i, np.uint8))
    script = os.path.join(REPO, "tools", "data", "create_file_list.py")
    run = subprocess.run([sys.executable, script, str(tmp_path), "--pair", "train", "trainannot", "train.txt",
                          "--pair", "val", "valannot", "val.txt"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "train.txt").read_text().splitlines()[0] == "train/f0.png trainannot/f0.png"
    ds = build({"type": "Dataset", "mode": "val", "dataset_root": str(tmp_path), "num_classes": 11,
                "val_path": "val.txt", "transforms": [{"type": "Normalize"}]}, DATASETS, where="val_dataset")
    assert len(ds) == 2 and (ds[1]["label"] == 1).all()
