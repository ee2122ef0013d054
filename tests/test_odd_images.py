"""Odd images through predict.py and val.py as a user runs them: grey, RGBA, 16-bit and palette
images convert as PaddleSeg's ``cv2.imread(path, IMREAD_COLOR)`` does; 1x1 and 3x5 images, and
paths with spaces or non-ASCII characters work; damaged inputs stop with one message naming the
file (exit 2); a val set without any labelled pixel is a clear error, not a metric of 0."""

import json
import os

import cv2
import numpy as np
import paddle
import pytest
from cli import TIMEOUT, make_case, run_side_by_side, tool
from PIL import Image

from segkit.transforms import read_image

RNG = np.random.default_rng(0)


def colour(h, w):
    return RNG.integers(0, 256, (h, w, 3)).astype(np.uint8)


ODD = {  # file name -> PIL image
    "grey image.png": lambda: Image.fromarray(colour(20, 30)[..., 0], "L"),
    "rgba.png": lambda: Image.fromarray(np.dstack([colour(20, 30), np.full((20, 30), 128, np.uint8)]), "RGBA"),
    "sixteen bit.png": lambda: Image.fromarray(RNG.integers(0, 65535, (20, 30)).astype(np.uint16)),
    "palette.png": lambda: Image.fromarray(colour(20, 30)).convert("P", palette=Image.ADAPTIVE, colors=8),
    "one pixel.png": lambda: Image.fromarray(colour(1, 1)),
    "three by five.jpg": lambda: Image.fromarray(colour(3, 5)),
    "grå bild é.png": lambda: Image.fromarray(colour(20, 30)),
}


@pytest.fixture(scope="module")
def odd(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("odd images")  # a space in every path
    folder = tmp / "images ü"
    folder.mkdir()
    for name, make in ODD.items():
        make().save(folder / name)
    config, _ = make_case(tmp, "data", "train", None)
    from segkit.config import load_config

    weights = str(tmp / "model.pdparams")
    paddle.save(load_config(config).build_model().state_dict(), weights)
    return {"tmp": tmp, "folder": folder, "config": config, "weights": weights}


def test_odd_images_read_as_paddleseg_reads_them(odd):
    for name in ODD:
        path = str(odd["folder"] / name)
        expected = cv2.cvtColor(cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        np.testing.assert_array_equal(read_image(path), expected, err_msg=name)


def file_list_dataset(root, images, labels, name):
    """A file list pairing ``images`` with ``labels`` (label arrays written next to them)."""
    lines = []
    for image, label in zip(images, labels):
        label_path = os.path.join(root, os.path.splitext(os.path.basename(image))[0] + "_label.png")
        Image.fromarray(label).save(label_path)
        lines.append(f"{image}|{label_path}")
    list_path = os.path.join(root, name)
    with open(list_path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return list_path


def val_opts(list_path, root):
    return ["--opts", "val_dataset.type=Dataset", f"val_dataset.dataset_root={root}", f"val_dataset.val_path={list_path}",
            "val_dataset.num_classes=19", "val_dataset.separator='|'"]


@pytest.mark.timeout(2 * TIMEOUT)
def test_predict_and_val_on_odd_and_damaged_inputs(odd):
    tmp, folder, config, weights = odd["tmp"], odd["folder"], odd["config"], odd["weights"]
    images = sorted(str(folder / name) for name in ODD)
    sizes = {path: Image.open(path).size for path in images}
    labels = [RNG.integers(0, 19, (h, w)).astype(np.uint8) for w, h in sizes.values()]
    good_list = file_list_dataset(str(tmp), images, labels, "odd.txt")
    ignored_list = file_list_dataset(str(tmp), images[:2], [np.full_like(x, 255) for x in labels[:2]], "ignored.txt")
    (tmp / "empty").mkdir()
    not_image = tmp / "bad" / "notes.png"
    not_image.parent.mkdir()
    not_image.write_text("not an image")
    zero = tmp / "zero.png"
    zero.write_bytes(b"")
    zero_list = file_list_dataset(str(tmp), [str(zero)], [labels[0]], "zero.txt")
    predict = ["predict.py", "--config", config, "--model_path", weights]
    results = run_side_by_side({
        "predict odd": tool(*predict, "--image_path", folder, "--save_dir", tmp / "pred"),
        "val odd": tool("val.py", "--config", config, "--model_path", weights, "--save_dir", tmp / "val",
                        *val_opts(good_list, tmp)),
        "val all ignored": tool("val.py", "--config", config, "--model_path", weights, "--save_dir", tmp / "val_ign",
                                *val_opts(ignored_list, tmp)),
        "predict empty folder": tool(*predict, "--image_path", tmp / "empty", "--save_dir", tmp / "p1"),
        "predict not an image": tool(*predict, "--image_path", not_image.parent, "--save_dir", tmp / "p2"),
        "val zero-byte image": tool("val.py", "--config", config, "--model_path", weights, "--save_dir", tmp / "v2",
                                    *val_opts(zero_list, tmp)),
    })
    for name in ("predict odd", "val odd"):
        assert results[name][0] == 0, f"{name}:\n{results[name][1][-3000:]}"
    for path in images:
        stem = os.path.splitext(os.path.basename(path))[0]
        written = Image.open(tmp / "pred" / "pseudo_color_prediction" / f"{stem}.png")
        assert written.size == sizes[path], path
    assert json.loads((tmp / "val" / "metrics.json").read_text())["num_images"] == len(images)
    expected = {"val all ignored": "hold no labelled pixel", "predict empty folder": str(tmp / "empty"),
                "predict not an image": str(not_image), "val zero-byte image": f"{zero} is empty (0 bytes)"}
    for name, text in expected.items():
        code, out = results[name]
        assert code == 2 and text in out and "Traceback" not in out, f"{name}: exit {code}\n{out[-3000:]}"
