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
from segkit.datasets.base import default_palette
from segkit.errors import ConfigError, DatasetError
from segkit.registry import DATASETS, build

TRAIN_T = [{"type": "RandomPaddingCrop", "crop_size": [32, 24]}, {"type": "Normalize"}]
VAL_T = [{"type": "Resize", "target_size": [40, 30]}, {"type": "Normalize"}]


def write_image(path, h, w, seed=0):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    img = np.random.default_rng(seed).integers(0, 256, size=(h, w, 3)).astype(np.uint8)
    cv2.imwrite(str(path), img)
    return img


def write_pairs(root, counts, name, image, label):
    """``images/<split>/<name>.jpg`` (``image(i)``) and ``annotations/<split>/<name>.png`` (``label``)
    for ``counts[split]`` samples of each split."""
    for split, count in counts.items():
        for i in range(count):
            os.makedirs(root / "images" / split, exist_ok=True)
            Image.fromarray(image(i)).save(root / "images" / split / f"{name(split, i)}.jpg")
            write_label(root / "annotations" / split / f"{name(split, i)}.png", label)


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


# ---- tiny copies of the official layouts --------------------------------------------------------

def stem_label(h, w, value):
    """A label filled with ``value`` except one corner pixel of each class in ``extra``."""
    return np.full((h, w), value, np.uint8)


@pytest.fixture
def cityscapes(tmp_path):
    """leftImg8bit/gtFine with 2 cities in train, 1 in val, 1 in test, plus the other gtFine files."""
    root = tmp_path / "cityscapes"
    layout = {"train": {"aachen": 2, "bochum": 1}, "val": {"frankfurt": 2}, "test": {"berlin": 1}}
    n = 0
    for split, cities in layout.items():
        for city, count in cities.items():
            for i in range(count):
                stem = f"{city}_{i:06d}_000019"
                write_image(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", 16, 32, seed=n)
                gt = root / "gtFine" / split / city
                # the label value tells which image it belongs to
                write_label(gt / f"{stem}_gtFine_labelTrainIds.png", stem_label(16, 32, n % 19))
                write_label(gt / f"{stem}_gtFine_labelIds.png", stem_label(16, 32, 7))
                write_label(gt / f"{stem}_gtFine_instanceIds.png", stem_label(16, 32, 1))
                Image.fromarray(np.zeros((16, 32, 3), np.uint8)).save(gt / f"{stem}_gtFine_color.png")
                n += 1
    return root


def cs(root, mode="train", transforms=VAL_T):
    return build({"type": "Cityscapes", "dataset_root": str(root), "mode": mode, "transforms": transforms},
                 DATASETS, where="train_dataset")


def test_cityscapes_pairs_by_stem(cityscapes):
    ds = cs(cityscapes)
    assert len(ds) == 3 and len(cs(cityscapes, "val")) == 2
    for img, lab in ds.file_list:
        assert os.path.basename(img).replace("_leftImg8bit.png", "") == \
            os.path.basename(lab).replace("_gtFine_labelTrainIds.png", "")
        assert os.path.basename(os.path.dirname(img)) == os.path.basename(os.path.dirname(lab))
    assert ds.num_classes == 19 and ds.ignore_index == 255
    assert ds.class_names[0] == "road" and ds.class_names[18] == "bicycle" and len(ds.class_names) == 19
    assert ds.palette[0] == [128, 64, 128] and ds.palette[13] == [0, 0, 142]
    test = cs(cityscapes, "test")
    assert len(test) == 1 and test.file_list[0][1] is None
    assert "label" not in test[0]


def test_cityscapes_missing_and_extra_files_are_named(cityscapes):
    gt = cityscapes / "gtFine" / "train"
    os.remove(gt / "bochum" / "bochum_000000_000019_gtFine_labelTrainIds.png")
    write_label(gt / "aachen" / "aachen_000099_000019_gtFine_labelTrainIds.png", stem_label(16, 32, 0))
    with pytest.raises(DatasetError) as err:
        cs(cityscapes)
    assert "bochum_000000_000019_leftImg8bit.png" in str(err.value)
    assert "aachen_000099_000019_gtFine_labelTrainIds.png" in str(err.value)


def test_cityscapes_wrong_root_and_unconverted_labels(cityscapes, tmp_path):
    with pytest.raises(DatasetError, match=r"'.*/cityscape' not found.*leftImg8bit/train/<city>/\*_leftImg8bit\.png"):
        cs(tmp_path / "cityscape")
    os.makedirs(tmp_path / "empty")
    with pytest.raises(DatasetError, match=r"'.*/empty/leftImg8bit/train' not found"):
        cs(tmp_path / "empty")
    for path in (cityscapes / "gtFine" / "val").rglob("*_labelTrainIds.png"):
        os.remove(path)
    with pytest.raises(DatasetError, match="convert_cityscapes.py"):
        cs(cityscapes, "val")


def test_cityscapes_values_and_bad_value(cityscapes):
    ds = cs(cityscapes, "val")
    s = ds[1]
    assert set(np.unique(s["label"])) == {4}  # the 5th generated pair, value 4 % 19
    label = np.zeros((16, 32), np.uint8)
    label[0, 0] = 19
    write_label(cityscapes / "gtFine" / "val" / "frankfurt" / "frankfurt_000001_000019_gtFine_labelTrainIds.png", label)
    with pytest.raises(DatasetError, match=r"frankfurt_000001_000019_gtFine_labelTrainIds\.png.*\b19\b"):
        ds[1]


def test_paddleseg_cityscapes_config_runs_unchanged(cityscapes):
    # the train_dataset section of PaddleSeg's configs/_base_/cityscapes.yml, crop shrunk to fit
    cfg = {
        "type": "Cityscapes",
        "dataset_root": str(cityscapes),
        "transforms": [
            {"type": "ResizeStepScaling", "min_scale_factor": 0.5, "max_scale_factor": 2.0, "scale_step_size": 0.25},
            {"type": "RandomPaddingCrop", "crop_size": [24, 12]},
            {"type": "RandomHorizontalFlip"},
            {"type": "RandomDistort", "brightness_range": 0.4, "contrast_range": 0.4, "saturation_range": 0.4},
            {"type": "Normalize", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
        ],
        "mode": "train",
    }
    ds = build(cfg, DATASETS, where="train_dataset")
    s = ds[0]
    assert s["img"].shape == (3, 12, 24) and s["label"].shape == (12, 24)


@pytest.fixture
def camvid(tmp_path):
    root = tmp_path / "camvid"
    rng = np.random.default_rng(1)
    for split, count in (("train", 3), ("val", 1), ("test", 2)):
        for i in range(count):
            write_image(root / split / f"0001TP_{i:06d}.png", 18, 24, seed=i)
            write_label(root / f"{split}annot" / f"0001TP_{i:06d}.png", rng.integers(0, 12, size=(18, 24)))
    return root


def test_camvid_layout_void_ignored_and_test_labels(camvid):
    ds = build({"type": "CamVid", "dataset_root": str(camvid), "mode": "val", "transforms": VAL_T},
               DATASETS, where="val_dataset")
    assert len(ds) == 1 and ds.num_classes == 11 and ds.class_names[0] == "Sky"
    assert ds.palette[3] == [128, 64, 128]
    raw = np.asarray(Image.open(ds.file_list[0][1]))
    label = ds[0]["label"]
    np.testing.assert_array_equal(label[raw == 11], 255)
    np.testing.assert_array_equal(label[raw != 11], raw[raw != 11])
    test = build({"type": "CamVid", "dataset_root": str(camvid), "mode": "test", "transforms": VAL_T},
                 DATASETS, where="val_dataset")
    assert len(test) == 2 and "label" in test[0]
    os.remove(camvid / "trainannot" / "0001TP_000002.png")
    with pytest.raises(DatasetError, match=r"0001TP_000002\.png"):
        build({"type": "CamVid", "dataset_root": str(camvid), "mode": "train", "transforms": VAL_T},
              DATASETS, where="train_dataset")
    with pytest.raises(DatasetError, match="valannot"):
        os.rename(camvid / "valannot", camvid / "val_annot")
        build({"type": "CamVid", "dataset_root": str(camvid), "mode": "val", "transforms": VAL_T},
              DATASETS, where="val_dataset")


@pytest.fixture
def ade(tmp_path):
    root = tmp_path / "ADEChallengeData2016"
    label = np.zeros((20, 30), np.uint8)
    label[:, 10:] = 1
    label[:, 20:] = 150
    write_pairs(root, {"training": 2, "validation": 2}, lambda split, i: f"ADE_{split[:5]}_{i:08d}",
                lambda i: np.random.default_rng(i).integers(0, 256, size=(20, 30, 3)).astype(np.uint8), label)
    return root


def ade20k(root, mode="val"):
    return build({"type": "ADE20K", "dataset_root": str(root), "mode": mode, "transforms": VAL_T},
                 DATASETS, where="val_dataset")


def test_ade20k_reduce_zero_label(ade):
    ds = ade20k(ade)
    assert len(ds) == 2 and len(ade20k(ade, "train")) == 2
    label = ds[0]["label"]
    assert (label[:, :10] == 255).all() and (label[:, 10:20] == 0).all() and (label[:, 20:] == 149).all()
    assert ds.num_classes == 150 and ds.class_names[0] == "wall" and ds.class_names[149] == "flag"
    assert ds.palette[0] == [120, 120, 120] and ds.palette[149] == [92, 0, 255]
    # PaddleSeg's own ADE20K applies the same mapping
    import paddleseg.datasets as paddleseg_datasets  # the oracle is a test dependency
    theirs = paddleseg_datasets.ADE20K(transforms=[], dataset_root=str(ade), mode="val")
    pairs = {os.path.basename(i): lab for i, lab in theirs.file_list}
    raw = np.asarray(Image.open(pairs[os.path.basename(ds.file_list[0][0])]))
    np.testing.assert_array_equal(label, (raw - 1).astype(np.int64))


def test_ade20k_errors(ade):
    with pytest.raises(DatasetError, match="ADEChallengeData2016"):
        ade20k(ade.parent)  # the folder above the official one
    with pytest.raises(DatasetError, match="dataset_root is not set"):
        build({"type": "ADE20K", "transforms": VAL_T}, DATASETS, where="val_dataset")
    with pytest.raises(DatasetError, match="'train' or 'val'"):
        ade20k(ade, "test")
    label = np.full((20, 30), 151, np.uint8)
    write_label(ade / "annotations" / "validation" / "ADE_valid_00000001.png", label)
    with pytest.raises(DatasetError, match=r"ADE_valid_00000001\.png.*150"):
        ade20k(ade)[1]


@pytest.fixture
def coco(tmp_path):
    root = tmp_path / "cocostuff"
    raw = np.full((12, 16), 181, np.uint8)
    raw[0] = 255
    write_pairs(root, {"train2017": 2, "val2017": 1}, lambda split, i: f"{i:012d}",
                lambda i: np.zeros((12, 16, 3), np.uint8), raw)
    return root


def test_cocostuff_raw_labels_point_to_converter_and_converted_labels_load(coco):
    def make_coco(type_name="COCOStuff"):
        return build({"type": type_name, "dataset_root": str(coco), "mode": "val", "transforms": VAL_T},
                     DATASETS, where="val_dataset")

    with pytest.raises(DatasetError, match="convert_cocostuff.py"):
        make_coco()[0]
    label = np.full((12, 16), 170, np.uint8)
    write_label(coco / "annotations" / "val2017" / "000000000000_labelTrainIds.png", label)
    ds = make_coco("CocoStuff")  # PaddleSeg's name works too
    assert ds.file_list[0][1].endswith("_labelTrainIds.png")
    assert (ds[0]["label"] == 170).all()
    assert ds.num_classes == 171 and ds.class_names[0] == "person" and ds.class_names[170] == "wood"
    assert len(ds.palette) == 171 and ds.palette[0] == [0, 192, 64]
