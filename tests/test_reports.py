"""Evaluation reports (JSON, CSV, confusion-matrix heat map), side-by-side predictions, and CLI flags
that would be ignored."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import paddle
import pytest
from conftest import QUICKSTART, ROOT
from PIL import Image

import predict as predict_tool
import val as val_tool
from segkit.config import load_config
from segkit.engine.evaluate import REPORT_FILES, write_reports
from segkit.engine.predict import match_labels
from segkit.errors import ConfigError, DatasetError
from segkit.metrics import metrics_from_confusion
from segkit.visualize import colour_label, confusion_heatmap, ramp_colours

NAMES = ["ground", "sky", "disc", "box", "triangle", "pole"]
SCENE_PALETTE = [[128, 100, 64], [70, 130, 180], [220, 20, 60], [250, 170, 30], [153, 50, 204], [0, 200, 120]]


# ---- write_reports on a hand-made result -------------------------------------------------------

def hand_result():
    # rows = label, columns = prediction; class 2 has no labelled pixel.
    cm = np.array([[5, 1, 0], [2, 3, 4], [0, 0, 0]])
    result = metrics_from_confusion(cm)
    result.update(confusion_matrix=cm, num_images=2,
                  per_image=[{"image": "a.png", "mIoU": 0.9}, {"image": "b.png", "mIoU": 0.2}])
    return result


def test_reports_hold_names_and_numbers(tmp_path):
    written = write_reports(hand_result(), str(tmp_path), ["road", "car", "bus"])
    assert sorted(os.path.basename(p) for p in written) == sorted(REPORT_FILES)

    metrics = json.loads((tmp_path / "metrics.json").read_text())
    road = metrics["per_class"][0]
    assert road["name"] == "road" and road["IoU"] == pytest.approx(5 / 8)  # 5 / (7 predicted + 6 labelled - 5)
    assert metrics["per_class"][1]["predicted_pixels"] == 4 and metrics["per_class"][2]["pixels"] == 0

    with open(tmp_path / "per_class.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == ["road", "car", "bus"]
    assert float(rows[1]["recall"]) == pytest.approx(3 / 9) and float(rows[1]["precision"]) == pytest.approx(3 / 4)

    with open(tmp_path / "confusion_matrix.csv", newline="") as f:
        table = list(csv.reader(f))
    assert table[0] == ["label \\ prediction", "road", "car", "bus"]
    assert table[2] == ["car", "2", "3", "4"]

    worst_first = json.loads((tmp_path / "per_image.json").read_text())
    assert [r["image"] for r in worst_first] == ["b.png", "a.png"]


def test_heat_map_colours_rows_by_their_share():
    cm = np.array([[10, 0, 0], [0, 0, 0], [3, 3, 4]])
    pixels = np.asarray(confusion_heatmap(cm, ["a", "b", "c"]).convert("RGB")).reshape(-1, 3)
    colours = {tuple(c) for c in np.unique(pixels, axis=0)}
    assert (8, 48, 107) in colours  # row a: 100 % on the diagonal, the darkest colour
    assert (225, 225, 225) in colours  # row b has no labelled pixel: grey, not "0 %"
    assert tuple(ramp_colours(np.array([0.4]))[0]) in colours  # row c: 40 % at (c, c)


def test_ramp_runs_from_white_to_dark_blue():
    ends = ramp_colours(np.array([0.0, 1.0, -1.0, 2.0]))
    assert ends.tolist() == [[247, 251, 255], [8, 48, 107], [247, 251, 255], [8, 48, 107]]
    assert np.all(np.diff(ramp_colours(np.linspace(0, 1, 11)).astype(int).sum(axis=1)) < 0)  # darker as it rises


def test_heat_map_for_150_classes_stays_a_reasonable_size():
    names = [f"class with a long name {i}" for i in range(150)]
    image = confusion_heatmap(np.random.default_rng(0).integers(0, 100, (150, 150)), names)
    assert 1800 < image.width < 2600 and 1800 < image.height < 2600
    with pytest.raises(ValueError, match="3 class names"):
        confusion_heatmap(np.ones((4, 4)), ["a", "b", "c"])


# ---- val.py and predict.py end to end ----------------------------------------------------------

@pytest.fixture(scope="module")
def tiny(scenes_root, tmp_path_factory):
    """A 4-image val list of the generated scenes, a small SegFormer config and random weights."""
    folder = tmp_path_factory.mktemp("tiny")
    with open(os.path.join(scenes_root, "val.txt")) as f:
        lines = f.read().splitlines()[:4]
    (folder / "val4.txt").write_text("\n".join(lines) + "\n")
    config = folder / "tiny.yml"
    config.write_text(
        f"_base_: {QUICKSTART}\n"
        "val_dataset:\n  type: Dataset\n"
        f"  dataset_root: {scenes_root}\n  val_path: {folder / 'val4.txt'}\n  num_classes: 6\n"
        f"  class_names: {NAMES}\n  palette: {SCENE_PALETTE}\n  mode: val\n  transforms: [{{type: Normalize}}]\n"
        "model:\n  embedding_dim: 32\n"
    )
    paddle.seed(1)
    model = load_config(str(config), []).build_model()
    weights = str(folder / "model.pdparams")
    paddle.save(model.state_dict(), weights)
    return {"config": str(config), "weights": weights, "root": scenes_root, "lines": lines, "dir": folder}


def test_val_writes_every_report_consistently(tiny, tmp_path, capsys):
    out = tmp_path / "eval"
    val_tool.main(["--config", tiny["config"], "--model_path", tiny["weights"], "--save_dir", str(out),
                   "--is_slide", "--crop_size", "96", "96", "--stride", "64", "64"])
    console = capsys.readouterr().out
    assert "[EVAL] #Images: 4 mIoU:" in console and "triangle" in console
    # progress in a log (no terminal): a line per quarter, then the summary
    assert "[EVAL] 1/4 img (25%), " in console and "[EVAL] 3/4 img (75%), " in console
    assert "[EVAL] 4/4 img in 00:00:" in console
    assert sorted(os.listdir(out)) == sorted(REPORT_FILES)

    # The matrix counts every labelled pixel of the 4 label files once.
    labelled = sum(int((np.asarray(Image.open(os.path.join(tiny["root"], line.split()[1]))) != 255).sum())
                   for line in tiny["lines"])
    matrix = np.loadtxt(out / "confusion_matrix.csv", delimiter=",", skiprows=1, usecols=range(1, 7))
    assert matrix.sum() == labelled

    # mIoU recomputed here from the CSV matrix agrees with metrics.json.
    tp = np.diag(matrix)
    union = matrix.sum(0) + matrix.sum(1) - tp
    miou = np.mean(np.where(union > 0, tp / np.maximum(union, 1), 0))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mIoU"] == pytest.approx(miou) and [c["name"] for c in metrics["per_class"]] == NAMES

    heat = Image.open(out / "confusion_matrix.png")
    assert heat.format == "PNG" and heat.width > 300 and heat.height > 300
    per_image = json.loads((out / "per_image.json").read_text())
    assert sorted(os.path.basename(r["image"]) for r in per_image) == ["0000.png", "0001.png", "0002.png", "0003.png"]


def test_predict_side_by_side_with_labels_and_legend(tiny, tmp_path):
    images = tmp_path / "in"
    labels = tmp_path / "labels" / "deeper"
    images.mkdir()
    labels.mkdir(parents=True)
    for line in tiny["lines"][:2]:
        img, lab = line.split()
        (images / os.path.basename(img)).write_bytes(open(os.path.join(tiny["root"], img), "rb").read())
        (labels / os.path.basename(lab)).write_bytes(open(os.path.join(tiny["root"], lab), "rb").read())
    out = tmp_path / "out"
    predict_tool.main(["--config", tiny["config"], "--model_path", tiny["weights"], "--image_path", str(images),
                       "--save_dir", str(out), "--side_by_side", "--label_path", str(tmp_path / "labels")])
    assert sorted(os.listdir(out)) == ["added_prediction", "pseudo_color_prediction", "side_by_side"]
    panel = np.asarray(Image.open(out / "side_by_side" / "0000.png").convert("RGB"))
    # 160-pixel images are shown twice as large: image | prediction | label | legend, 8 px apart, titles above.
    width, top = 320, 28
    assert panel.shape[1] > 3 * (width + 8) and panel.shape[0] == top + width + 8

    def at(column):
        left = 8 + column * (width + 8)
        return panel[top:top + width, left:left + width]

    def twice(a):
        return np.repeat(np.repeat(a, 2, axis=0), 2, axis=1)

    # The prediction panel shows the pseudo-colour prediction in the config's palette.
    pred = np.asarray(Image.open(out / "pseudo_color_prediction" / "0000.png"))
    np.testing.assert_array_equal(at(1), twice(np.asarray(SCENE_PALETTE, np.uint8)[pred]))

    # The label panel shows the label, ignored pixels white; the legend has a swatch for every class in it.
    label = np.asarray(Image.open(labels / "0000.png"))
    expected = np.asarray(SCENE_PALETTE + [[0, 0, 0]] * 250, np.uint8)[label]
    expected[label == 255] = 255
    np.testing.assert_array_equal(at(2), twice(expected))
    legend = panel[:, 3 * (width + 8) + 8:].reshape(-1, 3)
    legend_colours = {tuple(c) for c in np.unique(legend, axis=0)}
    for cls in np.unique(label[label != 255]):
        assert tuple(SCENE_PALETTE[cls]) in legend_colours


def test_predict_without_the_flag_writes_the_usual_outputs_only(tiny, tmp_path):
    image = os.path.join(tiny["root"], tiny["lines"][0].split()[0])
    predict_tool.main(["--config", tiny["config"], "--model_path", tiny["weights"], "--image_path", image,
                       "--save_dir", str(tmp_path)])
    assert sorted(os.listdir(tmp_path)) == ["added_prediction", "pseudo_color_prediction"]
    # a single label file works for a single image; an image-and-prediction panel has no label column
    predict_tool.main(["--config", tiny["config"], "--model_path", tiny["weights"], "--image_path", image,
                       "--save_dir", str(tmp_path / "b"), "--side_by_side"])
    two = Image.open(tmp_path / "b" / "side_by_side" / "0000.png")
    predict_tool.main(["--config", tiny["config"], "--model_path", tiny["weights"], "--image_path", image,
                       "--save_dir", str(tmp_path / "c"), "--side_by_side",
                       "--label_path", os.path.join(tiny["root"], tiny["lines"][0].split()[1])])
    three = Image.open(tmp_path / "c" / "side_by_side" / "0000.png")
    assert three.width - two.width == 320 + 8


def test_ignored_and_unknown_ids_are_drawn_white():
    palette = np.zeros((256, 3), np.uint8)
    palette[:3] = [[0, 0, 0], [10, 20, 30], [40, 50, 60]]
    rgb = colour_label(np.array([[0, 1, 2], [3, 255, 1]]), palette, num_classes=3)
    assert rgb.tolist() == [[[0, 0, 0], [10, 20, 30], [40, 50, 60]], [[255, 255, 255], [255, 255, 255], [10, 20, 30]]]


def test_labels_are_matched_by_relative_path_then_by_name(tmp_path):
    for rel in ("imgs/a/x.jpg", "imgs/b/x.jpg", "imgs/b/y.jpg", "labs/a/x.png", "labs/b/x.png", "labs/z/y.png", "other/q.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    images = [str(tmp_path / "imgs" / r) for r in ("a/x.jpg", "b/x.jpg", "b/y.jpg")]
    found = match_labels(images, str(tmp_path / "imgs"), str(tmp_path / "labs"))
    assert found == {images[0]: str(tmp_path / "labs/a/x.png"), images[1]: str(tmp_path / "labs/b/x.png"),
                     images[2]: str(tmp_path / "labs/z/y.png")}
    with pytest.raises(DatasetError, match="2 labels match"):  # x.jpg alone: two candidates
        match_labels([str(tmp_path / "imgs/a/x.jpg")], str(tmp_path / "elsewhere"), str(tmp_path / "labs"))
    with pytest.raises(DatasetError, match="no label matches"):
        match_labels(images, str(tmp_path / "imgs"), str(tmp_path / "other"))
    with pytest.raises(DatasetError, match="one file but 3 images"):
        match_labels(images, str(tmp_path / "imgs"), str(tmp_path / "labs/a/x.png"))


# ---- flags that would be ignored are errors ----------------------------------------------------

def run_tool(args):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, env=env)


def test_cli_names_the_flag_that_would_be_ignored(tiny):
    common = ["--config", tiny["config"], "--model_path", tiny["weights"]]
    result = run_tool(["tools/val.py", *common, "--scales", "0.75", "1.0"])
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--scales was given without --aug_eval" in result.stderr
    with pytest.raises(ConfigError, match=r"\-\-flip_horizontal was given without \-\-aug_pred"):
        predict_tool.main([*common, "--image_path", tiny["config"], "--flip_horizontal"])


@pytest.mark.parametrize("flags,message", [
    (["--scales", "1.0"], "--scales was given without --aug_eval"),  # even the default scale
    (["--flip_vertical"], "--flip_vertical was given without --aug_eval"),
    (["--crop_size", "64", "64"], "--crop_size was given without --is_slide"),
    (["--stride", "32", "32"], "--stride was given without --is_slide"),
    (["--is_slide"], "--crop_size W H and --stride W H are missing"),
    (["--is_slide", "--crop_size", "64", "64"], "--stride W H is missing"),
])
def test_val_rejects_flags_that_would_do_nothing(tiny, tmp_path, flags, message):
    with pytest.raises(ConfigError, match=message.replace("-", r"\-")):
        val_tool.main(["--config", tiny["config"], "--model_path", tiny["weights"], "--save_dir", str(tmp_path), *flags])


def test_predict_takes_aug_eval_too_and_label_path_needs_side_by_side(tiny, tmp_path):
    image = os.path.join(tiny["root"], tiny["lines"][0].split()[0])
    # The config's messages say --aug_eval; predict.py accepts it as well as --aug_pred.
    predict_tool.main(["--config", tiny["config"], "--model_path", tiny["weights"], "--image_path", image,
                       "--save_dir", str(tmp_path), "--aug_eval", "--flip_horizontal"])
    assert (tmp_path / "pseudo_color_prediction" / "0000.png").exists()
    with pytest.raises(SystemExit):
        predict_tool.main(["--config", tiny["config"], "--model_path", tiny["weights"], "--image_path", image,
                           "--label_path", image])


def test_slide_flags_from_the_config_are_enough(tiny, tmp_path):
    val_tool.main(["--config", tiny["config"], "--model_path", tiny["weights"], "--save_dir", str(tmp_path),
                   "--is_slide", "--opts", "test_config.crop_size=[96,96]", "test_config.stride=[64,64]"])
    assert (tmp_path / "metrics.json").exists()


# ---- report.html in a real browser ----------------------------------------------------------------

@pytest.mark.timeout(180)  # a browser that hangs fails here (each protocol command also waits at most 30 s)
def test_report_page_renders_in_a_headless_browser(tiny, tmp_path):
    from browser import Browser, find_chromium

    assert find_chromium(), "the report test needs Chromium: apt-get install -y chromium (.ci/run does)"
    out = tmp_path / "eval"
    val_tool.main(["--config", tiny["config"], "--model_path", tiny["weights"], "--save_dir", str(out),
                   "--html", "--html_images", "2"])
    page = (out / "report.html").read_text()
    # Self-contained: no script or image from anywhere but this folder.
    assert "<script src" not in page and "http://" not in page and "https://" not in page
    metrics = json.loads((out / "metrics.json").read_text())
    per_image = json.loads((out / "per_image.json").read_text())  # worst first

    with Browser(timeout=30) as browser:
        browser.open((out / "report.html").as_uri())
        cards = browser.evaluate("[...document.querySelectorAll('#headline .card')].map(c => c.innerText)")
        assert cards[0].split() == [f"{metrics['mIoU']:.4f}", "mIoU"] and cards[4].split() == ["4", "images"]

        # The per-class table, sorted by IoU on a click on its header, and reversed on a second click.
        names = "[...document.querySelectorAll('#classes tbody tr')].map(r => r.cells[1].innerText.trim())"
        assert browser.evaluate(names) == NAMES
        by_iou = [c["name"] for c in sorted(metrics["per_class"], key=lambda c: c["IoU"])]
        browser.evaluate("document.querySelectorAll('#classes th')[2].click()")
        assert browser.evaluate(names) == by_iou
        browser.evaluate("document.querySelectorAll('#classes th')[2].click()")
        assert browser.evaluate(names) == by_iou[::-1]

        # The confusion matrix and the worst image's thumbnail are loaded images; the thumbnail opens the full size.
        matrix = browser.evaluate("(m => [m.complete, m.naturalWidth, m.naturalHeight])(document.getElementById('matrix'))")
        assert matrix == [True, *Image.open(out / "confusion_matrix.png").size]
        first = browser.evaluate(
            "(r => [r.cells[1].title, r.cells[2].innerText, r.querySelector('img.thumb').naturalWidth,"
            " r.querySelector('a').getAttribute('href')])(document.querySelector('#images tbody tr'))")
        assert first[0] == per_image[0]["image"] and float(first[1]) == pytest.approx(per_image[0]["mIoU"], abs=1e-4)
        assert first[2] == 480
        full = Image.open(out / first[3])
        assert full.width > 3 * 320  # image | prediction | label at full size, and the legend
        assert browser.evaluate("document.querySelectorAll('#images img.thumb').length") == 2
        assert browser.evaluate("document.querySelectorAll('#images tbody tr').length") == 4

        shot = tmp_path / "page.png"
        browser.screenshot(str(shot))
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[0] > 1000 and pixels.std() > 20  # a long page, not a blank one
