"""PaddleSeg configs and flags end to end: PaddleSeg-style configs through train, val, predict and
export; --early_stop_intervals, --repeats, --device, --auc_roc, --save_probabilities, and the
PaddleSeg flags segkit deliberately lacks."""

import json
import os
import subprocess
import sys

import numpy as np
import paddle
import pytest
from conftest import QUICKSTART, ROOT, tiny_opts
from helpers import first_val_images
from PIL import Image

import export as export_tool
import predict as predict_tool
import train as train_tool
import val as val_tool
from segkit.config import INFERENCE_SECTIONS, load_config
from segkit.engine.train import Trainer
from segkit.errors import ConfigError
from segkit.metrics import roc_auc

FIXTURES = os.path.join(ROOT, "tests", "data", "paddleseg_configs")
# What each fixture needs besides dataset paths: its pretrained URL switched off (no network here).
# Each runs through every tool; export (10-30 s a model) is left out for the SegFormer-B0 recipe
# alone, whose model the base-optimizer fixture exports.
NO_PRETRAINED = {
    "segformer_b0_scenes.yml": ["model.backbone.pretrained=null"],
    "rtformer_slim_scenes.yml": ["model.pretrained=null"],
    "segnext_t_scenes.yml": ["model.backbone.pretrained=null"],
    "segformer_b0_base_optimizer_scenes.yml": [],
}


@pytest.fixture(scope="module")
def small_val(scenes_root, tmp_path_factory):
    """A val file list with the first two images of the embedded val split."""
    return first_val_images(scenes_root, tmp_path_factory.mktemp("lists"), 2)


def dataset_opts(root: str, val_list: str):
    return [f"train_dataset.dataset_root={root}", f"train_dataset.train_path={root}/train.txt",
            f"val_dataset.dataset_root={root}", f"val_dataset.val_path={val_list}"]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", sorted(NO_PRETRAINED))
def test_paddleseg_config_runs_through_train_val_predict_export(name, scenes_root, small_val, tmp_path, capsys):
    config = os.path.join(FIXTURES, name)
    opts = dataset_opts(scenes_root, small_val) + NO_PRETRAINED[name]
    run = str(tmp_path / "run")
    train_tool.main(["--config", config, "--iters", "2", "--save_interval", "2", "--save_dir", run, "--opts", *opts])
    trained = os.path.join(run, "iter_2")
    assert os.path.isfile(os.path.join(trained, "model.pdparams"))
    warnings = [line for line in capsys.readouterr().out.splitlines() if "[WARNING]" in line and "warmup_iters" in line]
    resolved = load_config(os.path.join(run, "config.yml"))
    if name == "segformer_b0_base_optimizer_scenes.yml":  # inherits the base's {type: SGD, momentum: 0.9}
        assert resolved.data["optimizer"] == {"type": "Momentum", "momentum": 0.9, "weight_decay": 4.0e-5}
    assert len(warnings) == (0 if name == "segformer_b0_scenes.yml" else 1)  # warmup 1500 > --iters 2: one line

    val_tool.main(["--config", config, "--model_path", trained, "--save_dir", str(tmp_path / "eval"), "--opts", *opts])
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["num_images"] == 2

    image = os.path.join(scenes_root, "images", "val", "0000.png")
    predict_tool.main(["--config", config, "--model_path", trained, "--image_path", image, "--save_probabilities",
                       "--save_dir", str(tmp_path / "pred"), "--opts", *opts])
    probs = np.load(tmp_path / "pred" / "probabilities" / "0000.npy")
    assert probs.dtype == np.float16 and probs.shape == (6, 160, 160)
    np.testing.assert_allclose(probs.astype(np.float32).sum(0), 1.0, atol=5e-3)
    labels = np.asarray(Image.open(tmp_path / "pred" / "pseudo_color_prediction" / "0000.png"))
    top_two = np.sort(probs.astype(np.float32), axis=0)[-2:]
    clear = top_two[1] - top_two[0] > 2e-3  # float16 rounding may swap near-ties
    np.testing.assert_array_equal(labels[clear], probs.argmax(0)[clear])
    assert (tmp_path / "pred" / "added_prediction" / "0000.png").exists()  # PaddleSeg keeps the input's name

    if name == "segformer_b0_scenes.yml":
        return
    assert export_tool.main(["--config", config, "--model_path", trained, "--save_dir", str(tmp_path / "export"),
                             "--opts", *opts]) == 0
    assert os.path.isfile(tmp_path / "export" / "model.pdiparams")


def test_inference_tools_check_only_the_sections_they_read(tmp_path):
    config = tmp_path / "broken_training.yml"
    config.write_text(f"_base_: {os.path.join(FIXTURES, 'segformer_b0_scenes.yml')}\n"
                      "optimizer: {type: Adamm}\nloss: {types: [{type: NoSuchLoss}], coef: [1]}\n"
                      "model: {backbone: {pretrained: null}}\n")
    cfg = load_config(str(config), sections=INFERENCE_SECTIONS)  # val / predict / export read model and val_dataset
    assert cfg.build_model() is not None
    with pytest.raises(ConfigError, match="optimizer.type"):  # training reads the optimizer
        load_config(str(config))


# ----------------------------------------------------------------------------------------------
# Training flags
# ----------------------------------------------------------------------------------------------


@pytest.mark.timeout(300)
def test_early_stop_after_n_evaluations_below_the_best(scenes_root, tmp_path, monkeypatch, capsys):
    scripted = iter([0.3, 0.5, 0.4, 0.5, 0.2, 0.1, 0.9])  # best at 2; 3 is lower, 4 ties, 5 is lower again
    monkeypatch.setattr(Trainer, "evaluate", lambda self, iteration: {"mIoU": next(scripted)})
    monkeypatch.setattr(Trainer, "write_reports", lambda self, result, folder, iteration: None)
    save_dir = tmp_path / "run"
    trainer = train_tool.build_trainer(["--config", QUICKSTART, "--do_eval", "--save_interval", "1",
                                        "--early_stop_intervals", "2", "--save_dir", str(save_dir),
                                        "--opts", *tiny_opts(scenes_root, iters=10, batch_size=1)])
    state = trainer.train()
    assert state.iter == 5 and state.best_iter == 2
    assert "Early stopping at iter 5. The best mean IoU is 0.5000" in capsys.readouterr().out
    best = paddle.load(str(save_dir / "best_model" / "train_state.pdstates"))
    assert best["iter"] == 2 and not (save_dir / "iter_6").exists()


def test_repeats_multiplies_the_samples_of_an_epoch(scenes_root, tmp_path):
    argv = ["--config", QUICKSTART, "--save_dir", str(tmp_path), "--opts", *tiny_opts(scenes_root)]
    assert len(train_tool.build_trainer(argv).train_set) == 300
    assert len(train_tool.build_trainer(["--repeats", "3"] + argv).train_set) == 900


def test_early_stop_needs_evaluation():
    with pytest.raises(ConfigError, match="needs --do_eval"):
        train_tool.build_trainer(["--config", QUICKSTART, "--early_stop_intervals", "3"])


def test_device_gpu_is_used_or_refused_in_one_clear_error(tmp_path):
    argv = ["--config", QUICKSTART, "--device", "gpu", "--save_dir", str(tmp_path)]
    if paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0:
        train_tool.build_trainer(argv)
        assert paddle.get_device().startswith("gpu")
        paddle.set_device("cpu")
    else:
        with pytest.raises(ConfigError, match="--device gpu: this Paddle build .* cannot run on GPU: .*--device cpu"):
            train_tool.build_trainer(argv)


@pytest.mark.parametrize("argv, message", [
    (["--device", "tpu"], "expected one of cpu, gpu, xpu, npu, mlu"),
    (["--data_format", "NHWC"], "--data_format NHWC: segkit does not support this PaddleSeg flag; models run in NCHW"),
    (["--profiler_options", "batch_range=[10,20]"], "--profiler_options .*: segkit does not support"),
])
def test_device_and_unsupported_flags_are_one_clear_error(argv, message):
    with pytest.raises(ConfigError, match=message):
        train_tool.build_trainer(["--config", QUICKSTART, *argv])


@pytest.mark.timeout(300)
def test_unsupported_flag_exits_2_with_one_line(tmp_path):
    result = subprocess.run([sys.executable, "tools/val.py", "--config", QUICKSTART, "--model_path", "x",
                             "--data_format", "NHWC"], cwd=ROOT, capture_output=True, text=True,
                            env=dict(os.environ, PYTHONWARNINGS="ignore"))
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(errors) == 1 and errors[0].startswith("error: --data_format NHWC")


def test_device_cpu_and_data_format_nchw_change_nothing(scenes_root, tmp_path):
    trainer = train_tool.build_trainer(["--config", QUICKSTART, "--device", "cpu", "--data_format", "NCHW",
                                        "--save_dir", str(tmp_path), "--opts", *tiny_opts(scenes_root)])
    assert paddle.get_device() == "cpu" and trainer.cfg.iters == 4


# ----------------------------------------------------------------------------------------------
# --auc_roc (binary segmentation)
# ----------------------------------------------------------------------------------------------


def test_roc_auc_matches_paddleseg_with_ties():
    from paddleseg.utils.metrics import auc_roc

    rng = np.random.default_rng(0)
    label = rng.integers(0, 2, size=(3, 1, 8, 9))
    logits = rng.normal(size=(3, 2, 8, 9)).round(1) + label * np.array([0, 0.8])[None, :, None, None]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    expected = auc_roc(probs.astype(np.float32), label, num_classes=2)
    assert roc_auc(probs[:, 1].astype(np.float32), label[:, 0] == 1) == pytest.approx(expected, abs=1e-12)
    assert np.isnan(roc_auc(np.array([0.2, 0.7]), np.array([True, True])))


@pytest.fixture(scope="module")
def binary_scenes(scenes_root, tmp_path_factory):
    """Four embedded val scenes relabelled sky (1) against the rest (0), with a few ignored pixels."""
    root = tmp_path_factory.mktemp("binary")
    lines = []
    for i in range(4):
        name = f"{i:04d}.png"
        label = np.asarray(Image.open(os.path.join(scenes_root, "labels", "val", name)))
        binary = (label == 1).astype(np.uint8)
        binary[:3] = 255
        Image.fromarray(binary).save(root / f"label_{name}")
        lines.append(f"{os.path.join(scenes_root, 'images', 'val', name)} label_{name}")
    (root / "val.txt").write_text("\n".join(lines) + "\n")
    config = root / "binary.yml"
    config.write_text(
        f"val_dataset: {{type: Dataset, dataset_root: {root}, val_path: {root}/val.txt, num_classes: 2, mode: val,"
        " transforms: [{type: Normalize}]}\n"
        "model: {type: SegFormer, backbone: {type: MixVisionTransformer_B0}, embedding_dim: 32, num_classes: 2}\n"
    )
    paddle.seed(1)
    model = load_config(str(config)).build_model()
    paddle.save(model.state_dict(), str(root / "model.pdparams"))
    return root


@pytest.mark.timeout(300)
def test_val_auc_roc_on_binary_segmentation(binary_scenes, tmp_path, capsys):
    config, weights = str(binary_scenes / "binary.yml"), str(binary_scenes / "model.pdparams")
    val_tool.main(["--config", config, "--model_path", weights, "--save_dir", str(tmp_path / "eval"), "--auc_roc", "True"])
    line = next(l for l in capsys.readouterr().out.splitlines() if "[EVAL] #Images: 4" in l)
    reported = float(line.split("Auc_roc: ")[1])
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["auc_roc"] == pytest.approx(reported, abs=5e-5)
    # The same pixels' probabilities, written by predict.py, give the same area (float16 files: ties).
    scores, positive = [], []
    for line in (binary_scenes / "val.txt").read_text().split("\n")[:4]:
        image, label_name = line.split()
        out = tmp_path / "pred"
        predict_tool.main(["--config", config, "--model_path", weights, "--image_path", image, "--save_dir", str(out),
                           "--save_probabilities"])
        label = np.asarray(Image.open(binary_scenes / label_name))
        keep = label != 255
        scores.append(np.load(out / "probabilities" / os.path.basename(image).replace(".png", ".npy"))[1][keep])
        positive.append(label[keep] == 1)
    assert reported == pytest.approx(roc_auc(np.concatenate(scores), np.concatenate(positive)), abs=2e-3)


def test_auc_roc_needs_two_classes(scenes_root, small_val, tmp_path):
    with pytest.raises(ConfigError, match="--auc_roc: needs binary segmentation"):
        val_tool.main(["--config", QUICKSTART, "--model_path", str(tmp_path / "none"), "--auc_roc",
                       "--opts", f"val_dataset.dataset_root={scenes_root}"])
