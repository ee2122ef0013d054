"""What training leaves to read: train.log (the console), eval_history.jsonl and VisualDL records,
each cut back to the resumed iteration after an interruption."""

import contextlib
import io
import json
import os
import re

import numpy as np
import pytest
from conftest import QUICKSTART, Interrupted, interrupt_at, tiny_opts
from helpers import first_val_images
from PIL import Image
from visualdl import LogReader

from segkit.config import load_config
from segkit.engine.train import Trainer, TrainOptions

NAMES = ["ground", "sky", "disc", "box", "triangle", "pole"]


@pytest.fixture(scope="module")
def val4(scenes_root, tmp_path_factory):
    """Four validation images, so each evaluation takes a moment."""
    return first_val_images(scenes_root, tmp_path_factory.mktemp("val"), 4)


def make_trainer(scenes_root, val4, save_dir, **options):
    opts = tiny_opts(scenes_root, iters=6) + [
        "val_dataset.type=Dataset", f"val_dataset.val_path={val4}", "val_dataset.num_classes=6",
        f"val_dataset.class_names={NAMES}", "val_dataset.transforms=[{type: Normalize}]"]
    return Trainer(load_config(QUICKSTART, opts), TrainOptions(save_dir=str(save_dir), do_eval=True, save_interval=2,
                                                               log_iters=1, **options))


def lines(path):
    with open(path, encoding="utf-8") as f:
        return f.read().splitlines()


def train_iterations(text_lines):
    return [int(m.group(1)) for m in (re.search(r"\[TRAIN\] epoch: \d+, iter: (\d+)/", s) for s in text_lines) if m]


@pytest.fixture(scope="module")
def full_run(scenes_root, val4, tmp_path_factory):
    """An uninterrupted 6-iteration run with VisualDL, and what its console showed."""
    save_dir = tmp_path_factory.mktemp("full")
    console = io.StringIO()
    with contextlib.redirect_stdout(console):
        make_trainer(scenes_root, val4, save_dir, use_vdl=True).train()
    history = [json.loads(s) for s in lines(save_dir / "eval_history.jsonl")]
    return {"dir": save_dir, "console": [s for s in console.getvalue().splitlines() if s.strip()], "history": history}


def test_train_log_holds_the_console_and_eval_history_every_evaluation(full_run):
    full_log = lines(full_run["dir"] / "train.log")
    assert full_log == full_run["console"]  # everything the console showed, including evaluation progress
    assert train_iterations(full_log) == [1, 2, 3, 4, 5, 6] and sum("[EVAL] #Images: 4" in s for s in full_log) == 3
    assert any("[EVAL] 4/4 img in" in s for s in full_log)
    history = full_run["history"]
    assert [r["iter"] for r in history] == [2, 4, 6]
    assert history[0]["class_names"] == NAMES and len(history[0]["class_iou"]) == 6
    assert np.mean(history[2]["class_iou"]) == pytest.approx(history[2]["mIoU"])
    assert {"mIoU", "Acc", "Kappa", "Dice", "seconds", "time", "num_images"} <= set(history[0])


def test_logs_are_cut_back_to_the_resumed_iteration(scenes_root, val4, full_run, tmp_path):
    broken_dir = tmp_path / "broken"
    full_log, history = lines(full_run["dir"] / "train.log"), full_run["history"]
    # Interrupted at iteration 5 (after iter_4 was saved), with a line and a record half written.
    broken = make_trainer(scenes_root, val4, broken_dir)
    interrupt_at(broken, 5)
    with pytest.raises(Interrupted):
        broken.train()
    with open(broken_dir / "train.log", "a") as f:
        f.write("2026-01-01 00:00:00 [INFO]\t[TRAIN] epoch: 1, iter: 5/6, lo")
    with open(broken_dir / "eval_history.jsonl", "a") as f:
        f.write('{"iter": 6, "mIo')
    make_trainer(scenes_root, val4, broken_dir, resume_model="auto").train()

    resumed_log = lines(broken_dir / "train.log")
    assert train_iterations(resumed_log) == [1, 2, 3, 4, 5, 6]
    assert not any(s.endswith(", lo") for s in resumed_log)
    assert sum("Resumed from" in s for s in resumed_log) == 1
    assert sum("[EVAL] #Images: 4" in s for s in resumed_log) == 3
    # Up to the checkpoint the resumed log is the interrupted run's log, which matches the full run's.
    cut = next(i for i, s in enumerate(resumed_log) if "Resumed from" in s)
    strip = [re.sub(r"^\S+ \S+ ", "", re.sub(r"[\d.]+ img/s|ETA [\d:]+|in [\d:]+|_cost: [\d.]+|ips: [\d.]+", "", s))
             for s in resumed_log[:cut]]
    expect = [re.sub(r"^\S+ \S+ ", "", re.sub(r"[\d.]+ img/s|ETA [\d:]+|in [\d:]+|_cost: [\d.]+|ips: [\d.]+", "", s))
              for s in full_log[:len(strip)]]
    assert strip == expect and train_iterations(resumed_log[:cut]) == [1, 2, 3, 4]
    resumed_history = [json.loads(s) for s in lines(broken_dir / "eval_history.jsonl")]
    assert [r["iter"] for r in resumed_history] == [2, 4, 6]
    for mine, theirs in zip(resumed_history, history):
        assert mine["mIoU"] == pytest.approx(theirs["mIoU"], abs=1e-6)


def read_vdl(folder):
    files = sorted(os.listdir(folder))
    assert len(files) == 1, files
    return LogReader(file_path=os.path.join(folder, files[0]))


def test_visualdl_gets_metrics_per_class_iou_images_and_hyper_parameters(full_run):
    history = full_run["history"]
    reader = read_vdl(full_run["dir"] / "vdl")
    tags = reader.get_tags()

    def scalar(tag):
        return [(r.id, r.value) for r in reader.get_data("scalar", tag)]

    for metric in ("mIoU", "Acc", "Kappa", "Dice"):
        assert scalar(f"Evaluate/{metric}") == [(r["iter"], pytest.approx(r[metric], abs=1e-6)) for r in history]
    for i, name in enumerate(NAMES):
        assert scalar(f"Evaluate/IoU/{i}_{name}") == [(r["iter"], pytest.approx(r["class_iou"][i], abs=1e-6))
                                                       for r in history]
    images = sorted(tags["image"])
    assert len(images) == 3 and images[0].startswith("Evaluate/images/0_")
    records = reader.get_data("image", images[0])
    assert [r.id for r in records] == [2, 4, 6]
    picture = Image.open(io.BytesIO(records[-1].image.encoded_image_string))
    assert picture.width > 3 * 320 and picture.height > 320  # image | prediction | label and a legend
    hparams = {h.name: h for h in reader.get_data("hyper_parameters", tags["hyper_parameters"][0])[0].hparam.hparamInfos}
    assert hparams["model"].string_value == "SegFormer" and hparams["learning_rate"].float_value == pytest.approx(0.001)
    assert hparams["global_batch"].int_value == 2
