"""Transforms: same geometry for image and label, integer labels, ignore padding, trans_info,
reverse_transform, PaddleSeg parity for the deterministic ops, and clear config errors."""

import numpy as np
import paddle
import pytest

import segkit.transforms as T
from segkit.errors import ConfigError, DatasetError
from segkit.registry import TRANSFORMS, build

H, W, BLOCK = 96, 128, 16


# a fixed random colour per class id: a blend of two colours is very unlikely to equal a third
PALETTE = np.random.default_rng(123).integers(0, 256, size=(1200, 3)).astype(np.uint8)
CODE = {tuple(int(v) for v in c): i for i, c in enumerate(PALETTE)}


def encode(label: np.ndarray) -> np.ndarray:
    """An RGB image whose colour encodes the class id, so geometry can be checked."""
    return PALETTE[label.astype(np.int64)]


def decode_agreement(img: np.ndarray, label: np.ndarray):
    """(fraction of pure-colour pixels whose label matches, number of pure pixels)."""
    img = np.rint(img).astype(np.int64)
    key = (img[..., 0] << 16) | (img[..., 1] << 8) | img[..., 2]
    lut = {(r << 16) | (g << 8) | b: i for (r, g, b), i in CODE.items()}
    cls = np.vectorize(lambda k: lut.get(int(k), -1), otypes=[np.int64])(key)
    pure = cls >= 0
    return float((label[pure] == cls[pure]).mean()) if pure.any() else 0.0, int(pure.sum())


@pytest.fixture
def sample():
    rng = np.random.default_rng(0)
    blocks = rng.integers(0, 19, size=(H // BLOCK, W // BLOCK))
    label = np.kron(blocks, np.ones((BLOCK, BLOCK), dtype=np.int64)).astype(np.uint8)
    return {"img": encode(label), "label": label, "trans_info": []}


GEOMETRIC = [
    T.Resize((77, 51), interp="NEAREST"),
    T.Resize((200, 100), keep_ratio=True, size_divisor=32, interp="LINEAR"),
    T.ResizeByLong(150),
    T.ResizeByShort(40),
    T.ResizeRangeScaling(60, 200),
    T.ResizeStepScaling(0.5, 2.0, 0.25),
    T.RandomPaddingCrop((100, 70)),
    T.RandomPaddingCrop((200, 150)),
    T.RandomCenterCrop((0.5, 0.5)),
    T.RandomHorizontalFlip(prob=1.0),
    T.RandomVerticalFlip(prob=1.0),
    T.RandomRotation(max_rotation=30, im_padding_value=0),
    T.RandomScaleAspect(0.5, 0.33),
    T.Padding((150, 100), im_padding_value=0),
]


@pytest.mark.parametrize("op", GEOMETRIC, ids=lambda op: type(op).__name__)
def test_image_and_label_move_together(op, sample):
    np.random.seed(1)
    out = op(dict(sample, trans_info=[]))
    img, label = out["img"], out["label"]
    assert img.shape[:2] == label.shape
    assert label.dtype == np.uint8
    agree, pure = decode_agreement(img, label)
    inside = label != 255
    # block interiors keep their exact colour; at least half the labelled pixels must be pure
    assert pure >= 0.5 * inside.sum()
    assert agree > 0.99
    # label values stay class ids or the ignore index: nearest interpolation, no blending
    assert set(np.unique(label)) <= set(np.unique(sample["label"])) | {255}


def test_flip_is_exact(sample):
    out = T.RandomHorizontalFlip(prob=1.0)(dict(sample, trans_info=[]))
    np.testing.assert_array_equal(out["label"], sample["label"][:, ::-1])
    np.testing.assert_array_equal(out["img"], sample["img"][:, ::-1])
    out = T.RandomVerticalFlip(prob=1.0)(dict(sample, trans_info=[]))
    np.testing.assert_array_equal(out["label"], sample["label"][::-1])
    kept = T.RandomHorizontalFlip(prob=0.0)(dict(sample, trans_info=[]))
    np.testing.assert_array_equal(kept["label"], sample["label"])


def test_padding_uses_ignore_index_and_records_size(sample):
    out = T.Padding((150, 100), label_padding_value=255)(dict(sample, trans_info=[]))
    assert out["img"].shape == (100, 150, 3)
    assert out["trans_info"] == [("padding", (H, W))]
    assert (out["label"][H:, :] == 255).all() and (out["label"][:, W:] == 255).all()
    np.testing.assert_array_equal(out["label"][:H, :W], sample["label"])
    # 127.5 cannot be stored in uint8: the image is promoted instead of rounding the fill value
    assert out["img"].dtype == np.float32 and (out["img"][H:, :, :] == 127.5).all()
    with pytest.raises(ValueError, match="larger than target_size"):
        T.Padding((64, 64))(dict(sample, trans_info=[]))


def test_random_padding_crop_pads_small_images_with_ignore(sample):
    np.random.seed(0)
    out = T.RandomPaddingCrop((200, 150), label_padding_value=255)(dict(sample, trans_info=[]))
    assert out["label"].shape == (150, 200)
    assert (out["label"] == 255).sum() == 150 * 200 - H * W
    assert out["trans_info"] == []  # random crops are training-only, not recorded


def test_category_max_ratio_rejects_one_class_crops():
    label = np.zeros((64, 256), np.uint8)
    label[:, 200:] = 1  # class 1 only in the right quarter
    op = T.RandomPaddingCrop((64, 64), category_max_ratio=0.75, loop_times=60)
    np.random.seed(0)
    for _ in range(20):
        out = op({"img": encode(label), "label": label.copy(), "trans_info": []})
        values, counts = np.unique(out["label"], return_counts=True)
        assert len(values) == 2 and counts.max() / counts.sum() < 0.75
        agree, _ = decode_agreement(out["img"], out["label"])
        assert agree == 1.0  # image cropped with the label (PaddleSeg 2.8 assigns the label here)


def test_int64_labels_with_large_ids_survive_every_geometric_op():
    label = np.kron(np.arange(12).reshape(3, 4) * 100, np.ones((16, 16), dtype=np.int64))
    for op in GEOMETRIC:
        np.random.seed(3)
        out = op({"img": np.zeros((48, 64, 3), np.uint8), "label": label.copy(), "trans_info": []})
        assert out["label"].dtype == np.int64
        assert set(np.unique(out["label"])) <= set(np.unique(label)) | {255}


def test_resize_sizes():
    img = np.zeros((100, 300, 3), np.uint8)

    def size(op):
        return op({"img": img.copy(), "trans_info": []})["img"].shape[:2]

    assert size(T.Resize((64, 32))) == (32, 64)
    # fit 300x100 inside long 512 / short 256: scale min(512/300, 256/100) = 1.7067
    assert size(T.Resize((512, 256), keep_ratio=True)) == (171, 512)
    assert size(T.Resize((512, 256), keep_ratio=True, size_divisor=32)) == (192, 512)
    assert size(T.ResizeByLong(150)) == (50, 150)
    assert size(T.ResizeByShort(50)) == (50, 150)
    assert size(T.ResizeByShort(50, max_size=120)) == (40, 120)
    assert size(T.LimitLong(max_long=200)) == (67, 200)
    assert size(T.LimitLong(min_long=600)) == (200, 600)


def test_photometric_ops_leave_label_and_geometry_alone(sample):
    np.random.seed(0)
    ops = [
        T.RandomDistort(0.5, 1.0, 0.5, 1.0, 0.5, 1.0, 18, 1.0, 0.5, 1.0),
        T.RandomBlur(prob=1.0, blur_type="random"),
        T.RandomNoise(prob=1.0, max_sigma=20),
    ]
    for op in ops:
        out = op(dict(sample, img=sample["img"].copy(), label=sample["label"].copy(), trans_info=[]))
        np.testing.assert_array_equal(out["label"], sample["label"])
        assert out["img"].shape == sample["img"].shape
        assert out["img"].dtype == np.float32
        assert 0 <= out["img"].min() and out["img"].max() <= 255
        assert not np.array_equal(out["img"], sample["img"].astype(np.float32))


def test_normalize_values():
    img = np.array([[[0, 127.5, 255]]], np.float32)
    out = T.Normalize(mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5])({"img": img})["img"]
    np.testing.assert_allclose(out, [[[-1.0, 0.0, 1.0]]], atol=1e-6)
    out = T.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])({"img": img})["img"]
    np.testing.assert_allclose(out, ((img / 255 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]), atol=1e-5)


def test_compose_reads_files_and_returns_chw(tmp_path, sample):
    import cv2
    from PIL import Image

    cv2.imwrite(str(tmp_path / "a.png"), sample["img"][..., ::-1])  # OpenCV writes BGR
    pal = Image.fromarray(sample["label"], mode="P")
    pal.putpalette([v for i in range(256) for v in (i, 255 - i, 3 * i % 256)])
    pal.save(tmp_path / "a_label.png")
    pipe = T.Compose([T.Resize((64, 48), interp="NEAREST")])
    out = pipe({"img": str(tmp_path / "a.png"), "label": str(tmp_path / "a_label.png")})
    assert out["img"].shape == (3, 48, 64) and out["img"].dtype == np.float32
    assert out["label"].shape == (48, 64) and out["label"].dtype == np.int64
    agree, _ = decode_agreement(out["img"].transpose(1, 2, 0), out["label"])
    assert agree == 1.0  # RGB order kept and the palette PNG read as indices
    with pytest.raises(DatasetError, match="nothere.png"):
        pipe({"img": str(tmp_path / "nothere.png")})


def test_reverse_transform_maps_back_exactly():
    rng = np.random.default_rng(0)
    label = rng.integers(0, 19, size=(37, 53)).astype(np.uint8)
    img = encode(label)
    # nearest upsampling by 2 then padding; reversing crops the pad and downsamples by 2
    pipe = T.Compose([T.Resize((106, 74), interp="NEAREST"), T.Padding((128, 96), im_padding_value=0)])
    out = pipe({"img": img.copy(), "label": label.copy()})
    assert out["trans_info"] == [("resize", (37, 53)), ("padding", (74, 106))]
    pred = paddle.to_tensor(out["label"][None, None])
    back = T.reverse_transform(pred, out["trans_info"], mode="nearest")
    assert back.dtype == pred.dtype
    np.testing.assert_array_equal(back.numpy()[0, 0], label)
    logits = paddle.to_tensor(out["img"][None])
    back = T.reverse_transform(logits, out["trans_info"], mode="bilinear")
    assert tuple(back.shape) == (1, 3, 37, 53)
    # the DataLoader's collated form (names in lists, sizes as tensors) maps back the same way
    collated = [[["resize"], [paddle.to_tensor([37]), paddle.to_tensor([53])]],
                [["padding"], [paddle.to_tensor([74]), paddle.to_tensor([106])]]]
    back = T.reverse_transform(pred, collated, mode="nearest")
    np.testing.assert_array_equal(back.numpy()[0, 0], label)


def test_matches_paddleseg_on_deterministic_ops():
    import paddleseg.transforms as PT  # the oracle is a test dependency: a missing one must fail
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(90, 140, 3)).astype(np.float32)
    # blocky labels: our nearest resize samples at pixel centres, PaddleSeg's is shifted by half a
    # pixel, so the two may differ on block borders only
    label = np.kron(rng.integers(0, 19, size=(5, 7)), np.ones((18, 20), np.int64)).astype(np.uint8)
    pairs = [
        (T.Resize((64, 48)), PT.Resize((64, 48))),
        (T.Resize((100, 80), keep_ratio=True, size_divisor=16), PT.Resize((100, 80), keep_ratio=True, size_divisor=16)),
        (T.ResizeByLong(199), PT.ResizeByLong(199)),
        (T.ResizeByShort(61), PT.ResizeByShort(61)),
        (T.Padding((160, 100)), PT.Padding((160, 100))),
        (T.Normalize(), PT.Normalize()),
    ]
    for ours, theirs in pairs:
        a = ours({"img": img.copy(), "label": label.copy(), "trans_info": []})
        b = theirs({"img": img.copy(), "label": label.copy(), "trans_info": [], "gt_fields": ["label"]})
        np.testing.assert_allclose(a["img"], b["img"], atol=1e-5, err_msg=type(ours).__name__)
        assert a["label"].shape == b["label"].shape
        assert (a["label"] != b["label"]).mean() < 0.1
        assert [(n, tuple(s)) for n, s in a["trans_info"]] == [(n, tuple(s)) for n, s in b["trans_info"]]


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="interp"):
        T.Resize((64, 64), interp="BILINEAR")
    with pytest.raises(ConfigError, match="crop_size"):
        T.RandomPaddingCrop(crop_size=512)
    with pytest.raises(ConfigError, match="crop_sise"):
        build({"type": "RandomPaddingCrop", "crop_sise": [64, 64]}, TRANSFORMS, where="train_dataset.transforms[0]")
    with pytest.raises(ConfigError, match="prob"):
        T.RandomHorizontalFlip(prob=1.5)
    with pytest.raises(ConfigError, match="std"):
        T.Normalize(mean=[0.5], std=[0.0])
