"""Inference export: dynamic batch, same logits as the dygraph model, clear errors, the CLI."""

import importlib.util
import os

import numpy as np
import paddle
import pytest
import yaml
from helpers import paddle_predictor, run_predictor

from segkit.engine.export import ExportError, check_input_shape, export_model
from segkit.models.layers import paddle_kernels
from segkit.models.rtformer import rtformer_slim
from paddleseg.models.rtformer import RTFormer as PaddleSegRTFormer  # oracle, test-only

# The exported program runs Paddle's convolutions, dygraph segkit's oneDNN ones (segkit.ops): they
# agree to float32 rounding, relative to the logits' scale.
ROUNDING = 5e-5


def load_cli():
    """tools/export.py as a module (tools/ is not a package)."""
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools", "export.py")
    spec = importlib.util.spec_from_file_location("segkit_tools_export", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def slim():
    paddle.seed(0)
    model = rtformer_slim(num_classes=4)
    model.eval()
    return model


def test_rtformer_exports_with_dynamic_batch_and_matches_dygraph(slim, tmp_path):
    save_dir = str(tmp_path / "logits")
    export_model(slim, save_dir, input_shape=[-1, 3, 64, 96], output_op="none")
    deploy = yaml.safe_load(open(os.path.join(save_dir, "deploy.yaml")))["Deploy"]
    assert deploy["input_shape"] == [-1, 3, 64, 96] and deploy["output_op"] == "none"

    pred = paddle_predictor(save_dir)
    loaded = paddle.jit.load(os.path.join(save_dir, "model"))
    rng = np.random.default_rng(0)
    for batch in (1, 2, 3):
        x = rng.normal(size=(batch, 3, 64, 96)).astype("float32")
        expected = slim(paddle.to_tensor(x)).numpy()
        assert expected.shape == (batch, 4, 64, 96)
        tolerance = ROUNDING * np.abs(expected).max()
        np.testing.assert_allclose(run_predictor(pred, x), expected, rtol=0, atol=tolerance)
        np.testing.assert_allclose(loaded(paddle.to_tensor(x)).numpy(), expected, rtol=0, atol=tolerance)


def test_dynamic_image_size_and_argmax_output(slim, tmp_path):
    save_dir = str(tmp_path / "labels")
    export_model(slim, save_dir)  # default: [-1, 3, -1, -1], argmax
    pred = paddle_predictor(save_dir)
    x = np.random.default_rng(1).normal(size=(2, 3, 70, 110)).astype("float32")
    labels = run_predictor(pred, x)
    assert labels.dtype == np.int32 and labels.shape == (2, 1, 70, 110)
    with paddle_kernels():  # the program's kernels (dygraph may use oneDNN convolutions, other rounding)
        expected = slim(paddle.to_tensor(x)).numpy().argmax(axis=1)[:, None]
    assert np.array_equal(labels, expected)  # only the classes that can win were resized: the same class map


def test_paddleseg_rtformer_cannot_export_a_dynamic_batch_and_the_error_says_why(tmp_path):
    model = PaddleSegRTFormer(num_classes=4, base_channels=32, head_channels=64)
    with pytest.raises(ExportError) as error:
        export_model(model, str(tmp_path / "upstream"), input_shape=[-1, 3, 64, 96])
    message = str(error.value)
    assert "groups=B" in message  # points at upstream's per-sample grouped convolution
    assert "--input_shape 1 3" in message  # and says how to export anyway


@pytest.mark.parametrize("shape", [[1, 3, 64], [0, 3, 64, 64], [1, -1, 64, 64], [1, 3, 64.5, 64]])
def test_bad_input_shapes_are_rejected(shape):
    with pytest.raises(ExportError, match="input_shape"):
        check_input_shape(shape)


def test_cli_exports_from_a_config_and_weights(slim, tmp_path, capsys):
    weights = str(tmp_path / "model.pdparams")
    paddle.save(slim.state_dict(), weights)
    config = tmp_path / "rtformer.yml"
    config.write_text(yaml.safe_dump({"model": {"type": "RTFormer", "num_classes": 4, "base_channels": 32,
                                                "head_channels": 64}}))
    save_dir = str(tmp_path / "cli")
    export_cli = load_cli()
    code = export_cli.main(["--config", str(config), "--model_path", weights, "--save_dir", save_dir,
                            "--input_shape", "-1", "3", "64", "64", "--output_op", "none"])
    assert code == 0
    x = np.random.default_rng(2).normal(size=(2, 3, 64, 64)).astype("float32")
    expected = slim(paddle.to_tensor(x)).numpy()
    np.testing.assert_allclose(run_predictor(paddle_predictor(save_dir), x), expected, rtol=0,
                               atol=ROUNDING * np.abs(expected).max())

    with pytest.raises(SystemExit) as bad:  # through the tools' one error handler, as `python tools/export.py` runs
        export_cli.run_cli(lambda: export_cli.main(["--config", str(config), "--save_dir", save_dir,
                                                    "--opts", "model.head_chanels=3"]))
    assert bad.value.code == 2
    assert "head_chanels" in capsys.readouterr().err