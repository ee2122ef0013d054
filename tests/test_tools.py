"""The command-line tools end to end: train -> val -> predict, PaddleSeg checkpoints, clear errors."""

import json
import os
import subprocess
import sys

import numpy as np
import paddle
import pytest
from conftest import QUICKSTART, ROOT, tiny_opts
from PIL import Image

import predict as predict_tool
import train as train_tool
import val as val_tool


@pytest.fixture(scope="module")
def trained(scenes_root, tmp_path_factory):
    """A checkpoint from a 2-iteration run of the quickstart config."""
    save_dir = str(tmp_path_factory.mktemp("run"))
    train_tool.main(["--config", QUICKSTART, "--save_dir", save_dir, "--save_interval", "2", "--log_iters", "1",
                     "--opts", *tiny_opts(scenes_root, iters=2)])
    return save_dir


def test_val_writes_reports(trained, scenes_root, tmp_path, capsys):
    val_tool.main(["--config", QUICKSTART, "--model_path", os.path.join(trained, "iter_2"), "--save_dir", str(tmp_path),
                   "--opts", f"val_dataset.dataset_root={scenes_root}"])
    out = capsys.readouterr().out
    assert "[EVAL] #Images: 60 mIoU:" in out and "[EVAL] Class IoU:" in out and "triangle" in out
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["num_images"] == 60
    assert [c["name"] for c in metrics["per_class"]] == ["ground", "sky", "disc", "box", "triangle", "pole"]
    per_image = json.loads((tmp_path / "per_image.json").read_text())
    assert len(per_image) == 60 and per_image[0]["mIoU"] <= per_image[-1]["mIoU"]


def test_predict_folder_keeps_relative_paths_and_class_ids(trained, scenes_root, tmp_path):
    images = tmp_path / "in" / "sub"
    images.mkdir(parents=True)
    for name in ("0000.png", "0001.png"):
        (images / name).write_bytes(open(os.path.join(scenes_root, "images", "val", name), "rb").read())
    out = tmp_path / "out"
    predict_tool.main(["--config", QUICKSTART, "--model_path", os.path.join(trained, "iter_2", "model.pdparams"),
                       "--image_path", str(tmp_path / "in"), "--save_dir", str(out),
                       "--opts", f"val_dataset.dataset_root={scenes_root}"])
    colour = Image.open(out / "pseudo_color_prediction" / "sub" / "0000.png")
    assert colour.mode == "P" and colour.size == (160, 160)
    assert np.asarray(colour).max() < 6
    assert (out / "added_prediction" / "sub" / "0001.png").exists()  # the input's name, as PaddleSeg


def test_custom_color_must_cover_every_class(trained, scenes_root, tmp_path):
    with pytest.raises(SystemExit):
        predict_tool.main(["--config", QUICKSTART, "--model_path", os.path.join(trained, "iter_2"),
                           "--image_path", os.path.join(scenes_root, "images", "val", "0000.png"),
                           "--save_dir", str(tmp_path), "--custom_color", "255", "0", "0"])


def paddleseg_segformer_b0(num_classes):
    from paddleseg.models import SegFormer
    from paddleseg.models.backbones import MixVisionTransformer_B0

    paddle.seed(3)
    model = SegFormer(num_classes=num_classes, backbone=MixVisionTransformer_B0(), embedding_dim=256)
    for name, tensor in model.state_dict().items():  # non-trivial BN statistics
        if name.endswith("_variance"):
            tensor.set_value(paddle.uniform(tensor.shape, min=0.5, max=1.5))
        elif name.endswith("_mean"):
            tensor.set_value(paddle.normal(0, 0.1, tensor.shape))
    return model.eval()


def test_paddleseg_checkpoint_predicts_like_the_oracle(scenes_root, tmp_path):
    oracle = paddleseg_segformer_b0(6)
    path = str(tmp_path / "model.pdparams")
    paddle.save(oracle.state_dict(), path)
    image_path = os.path.join(scenes_root, "images", "val", "0003.png")
    predict_tool.main(["--config", QUICKSTART, "--model_path", path, "--image_path", image_path,
                       "--save_dir", str(tmp_path / "out"), "--opts", f"val_dataset.dataset_root={scenes_root}"])
    ours = np.asarray(Image.open(tmp_path / "out" / "pseudo_color_prediction" / "0003.png"))
    img = np.asarray(Image.open(image_path).convert("RGB"), np.float32)
    x = paddle.to_tensor(((img / 255.0 - 0.5) / 0.5).transpose(2, 0, 1)[None])
    with paddle.no_grad():
        expected = paddle.argmax(oracle(x)[0], axis=1)[0].numpy()
    np.testing.assert_array_equal(ours, expected)


def run_cli(args):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, env=env)


def test_cli_errors_are_one_clear_message(tmp_path):
    typo = tmp_path / "typo.yml"
    typo.write_text(f"_base_: {QUICKSTART}\nbatch_szie: 4\n")
    result = run_cli(["tools/train.py", "--config", str(typo)])
    assert result.returncode == 2
    assert "typo.yml: batch_szie: unknown top-level key. Did you mean 'batch_size'?" in result.stderr
    assert "Traceback" not in result.stderr

    result = run_cli(["tools/val.py", "--config", QUICKSTART, "--model_path", str(tmp_path / "nothing.pdparams")])
    assert result.returncode == 2 and "does not exist" in result.stderr and "Traceback" not in result.stderr


def test_checkpoint_of_another_model_is_refused(scenes_root, tmp_path):
    other = paddleseg_segformer_b0(19)
    path = str(tmp_path / "model.pdparams")
    paddle.save(other.state_dict(), path)
    result = run_cli(["tools/val.py", "--config", QUICKSTART, "--model_path", path,
                      "--opts", f"val_dataset.dataset_root={scenes_root}"])
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "does not fit SegFormer" in result.stderr and "wrong shape" in result.stderr
    assert "(19, 256, 1, 1) vs model (6, 256, 1, 1)" in result.stderr  # the classifier shapes are named


def test_missing_dataset_folder_is_named(tmp_path):
    cfg = tmp_path / "c.yml"
    cfg.write_text(
        "val_dataset: {type: Dataset, dataset_root: /no/such/folder, num_classes: 3, val_path: val.txt,"
        " transforms: [{type: Normalize}], mode: val}\n"
        "model: {type: SegFormer, backbone: {type: MixVisionTransformer_B0}, embedding_dim: 32}\n"
    )
    result = run_cli(["tools/val.py", "--config", str(cfg), "--model_path", str(cfg)])
    assert result.returncode == 2 and "/no/such/folder" in result.stderr and "Traceback" not in result.stderr


TOOLS = sorted(
    os.path.join(folder, name)
    for folder in ("tools", os.path.join("tools", "data"))
    for name in os.listdir(os.path.join(ROOT, folder))
    if name.endswith(".py") and not name.startswith("_")
)


@pytest.mark.parametrize("tool", TOOLS)
def test_every_tool_runs_through_the_one_error_handler(tool):
    source = open(os.path.join(ROOT, tool), encoding="utf-8").read()
    assert source.rstrip().endswith('if __name__ == "__main__":\n    run_cli(main)'), tool
    assert "except SegkitError" not in source and "sys.exit(" not in source, tool


@pytest.mark.timeout(120)
def test_bad_input_found_inside_segkit_exits_2_from_every_kind_of_tool(scenes_root, tmp_path):
    # the training sampler's check (batch larger than the training set)
    result = run_cli(["tools/train.py", "--config", QUICKSTART, "--save_dir", str(tmp_path / "run"),
                      "--opts", *tiny_opts(scenes_root, batch_size=400)])
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "batch_size: the training set has 300 samples, fewer than one global batch" in result.stderr
    # convert_weights.py (exited 1 before it shared the handler)
    result = run_cli(["tools/convert_weights.py", str(tmp_path / "a.pth"), str(tmp_path / "b.pdparams"),
                      "--model", "hrvit_b9"])
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "unknown model or backbone 'hrvit_b9'" in result.stderr
