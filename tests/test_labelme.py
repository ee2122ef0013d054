"""tools/data/labelme2seg.py: LabelMe polygons to label PNGs, class list, file lists, a training config."""

import base64
import io
import json
import os
import sys

import numpy as np
import pytest
import yaml
from conftest import ROOT
from PIL import Image

import train as train_tool
from segkit.datasets.labelme import shape_mask
from segkit.errors import DatasetError

sys.path.insert(0, os.path.join(ROOT, "tools", "data"))
import labelme2seg  # noqa: E402

H, W = 30, 40


def polygon(label, x0, y0, x1, y1):
    return {"label": label, "points": [[x0, y0], [x1, y0], [x1, y1], [x0, y1]], "shape_type": "polygon",
            "group_id": None, "flags": {}}


def write_annotation(folder, stem, shapes, embed=False):
    """A LabelMe file as LabelMe saves it: the image beside it (or embedded), its size, the shapes."""
    image = Image.fromarray(np.random.default_rng(len(stem)).integers(0, 255, (H, W, 3), dtype=np.uint8))
    data = {"version": "5.4.1", "flags": {}, "shapes": shapes, "imagePath": f"{stem}.jpg", "imageData": None,
            "imageHeight": H, "imageWidth": W}
    if embed:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        data["imageData"] = base64.b64encode(buffer.getvalue()).decode()
    else:
        image.save(folder / f"{stem}.jpg", quality=95)
    (folder / f"{stem}.json").write_text(json.dumps(data))


@pytest.fixture()
def annotated(tmp_path):
    source = tmp_path / "photos"
    source.mkdir()
    write_annotation(source, "a", [
        polygon("car", 2, 2, 21, 17),            # car
        polygon("road", 10, 10, 35, 25),         # road, drawn later: covers the car where they overlap
        polygon("_background_", 14, 4, 18, 7),   # a hole in the car
        {"label": "__ignore__", "points": [[39, 3], [30, 0]], "shape_type": "rectangle"},  # drawn right to left
    ])
    write_annotation(source, "b", [polygon("tree", 0, 0, 9, 9)], embed=True)  # image only inside the JSON
    return source


def test_polygons_overlap_in_file_order_and_holes_cut_out(annotated, tmp_path):
    out = tmp_path / "dataset"
    labelme2seg.main([str(annotated), str(out), "--crop_size", "32"])
    assert (out / "class_names.txt").read_text().split() == ["_background_", "car", "road", "tree"]
    label = np.asarray(Image.open(out / "annotations" / "a.png"))
    assert Image.open(out / "annotations" / "a.png").mode == "P"  # palette PNG: pixel values are the ids

    expected = np.zeros((H, W), np.uint8)
    expected[2:18, 2:22] = 1      # polygon corners are inclusive, as LabelMe draws them
    expected[10:26, 10:36] = 2    # road over car
    expected[4:8, 14:19] = 0      # the hole
    expected[0:4, 30:40] = 255    # __ignore__
    np.testing.assert_array_equal(label, expected)

    tree = np.asarray(Image.open(out / "annotations" / "b.png"))
    assert (tree[:10, :10] == 3).all() and (tree[10:] == 0).all()
    assert Image.open(out / "images" / "b.png").size == (W, H)  # decoded from imageData
    assert (out / "images" / "a.jpg").read_bytes() == (annotated / "a.jpg").read_bytes()
    lines = [(out / n).read_text().split("\n")[0].split() for n in ("train.txt", "val.txt")]
    assert sorted(lines) == [["images/a.jpg", "annotations/a.png"], ["images/b.png", "annotations/b.png"]]


def test_two_commands_reach_training(annotated, tmp_path):
    out = tmp_path / "dataset"
    labelme2seg.main([str(annotated), str(out), "--crop_size", "32"])
    config = yaml.safe_load((out / "segformer_b0.yml").read_text())
    assert config["train_dataset"]["num_classes"] == 4 and config["val_dataset"]["class_names"][2] == "road"
    assert config["batch_size"] == 1  # one training image
    trainer = train_tool.build_trainer(["--config", str(out / "segformer_b0.yml"), "--do_eval", "--save_interval", "2",
                                        "--save_dir", str(tmp_path / "run"),
                                        "--opts", "iters=2", "lr_scheduler.warmup_iters=1"])
    trainer.train()
    metrics = json.loads((tmp_path / "run" / "best_model" / "metrics.json").read_text())
    assert [c["name"] for c in metrics["per_class"]] == ["_background_", "car", "road", "tree"]


def test_rectangles_and_circles_are_areas_lines_are_refused():
    rect = shape_mask({"label": "x", "points": [[5, 6], [1, 2]], "shape_type": "rectangle"}, (10, 10), "t")
    assert rect.sum() == 5 * 5 and rect[2:7, 1:6].all()
    circle = shape_mask({"label": "x", "points": [[5, 5], [5, 8]], "shape_type": "circle"}, (11, 11), "t")
    assert circle[5, 5] and circle[5, 2] and circle[8, 5] and not circle[0, 0] and 20 < circle.sum() < 40
    with pytest.raises(DatasetError, match="shape_type 'line' covers no area"):
        shape_mask({"label": "x", "points": [[0, 0], [5, 5]], "shape_type": "line"}, (10, 10), "f.json: shapes[0]")
    with pytest.raises(DatasetError, match="a polygon needs 3 or more points, got 2"):
        shape_mask({"label": "x", "points": [[0, 0], [5, 5]]}, (10, 10), "f.json: shapes[0]")


def test_unknown_label_with_a_class_list_is_a_clear_error(annotated, tmp_path):
    names = tmp_path / "classes.txt"
    names.write_text("_background_\ncar\nroad\n")
    with pytest.raises(DatasetError, match=r"b\.json: shapes\[0\] has the label 'tree', which is not in the class list"):
        labelme2seg.main([str(annotated), str(tmp_path / "out"), "--class_names", str(names)])
