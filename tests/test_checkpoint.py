"""Reading weights from a file, folder, zip, tar.gz or URL; strict loading reports."""

import functools
import http.server
import os
import tarfile
import threading
import zipfile

import numpy as np
import paddle
import pytest

from segkit.weights import sources
from segkit.weights import load_weights, read_state_dict
from segkit.errors import CheckpointError


def small_model():
    return paddle.nn.Sequential(paddle.nn.Conv2D(3, 4, 3), paddle.nn.BatchNorm2D(4), paddle.nn.Conv2D(4, 2, 1))


@pytest.fixture
def saved(tmp_path):
    paddle.seed(1)
    model = small_model()
    folder = tmp_path / "ckpt"
    folder.mkdir()
    paddle.save(model.state_dict(), str(folder / "model.pdparams"))
    return model, folder


def expected(model):
    return {k: v.numpy() for k, v in model.state_dict().items()}


def check_same(state, model):
    ref = expected(model)
    assert set(state) == set(ref)
    for key in ref:
        np.testing.assert_array_equal(state[key], ref[key])


def test_file_and_folder(saved):
    model, folder = saved
    check_same(read_state_dict(str(folder / "model.pdparams")), model)
    check_same(read_state_dict(str(folder)), model)


def test_zip_and_tar_gz(saved, tmp_path):
    model, folder = saved
    with zipfile.ZipFile(tmp_path / "w.zip", "w") as z:
        z.write(folder / "model.pdparams", "inner/model.pdparams")
    check_same(read_state_dict(str(tmp_path / "w.zip")), model)
    with tarfile.open(tmp_path / "w.tar.gz", "w:gz") as t:
        t.add(folder / "model.pdparams", "mix_vision_transformer_b0/model.pdparams")
    check_same(read_state_dict(str(tmp_path / "w.tar.gz")), model)


def test_url_is_downloaded_once_into_the_cache(saved, tmp_path, monkeypatch):
    model, folder = saved
    monkeypatch.setattr(sources, "CACHE_DIR", str(tmp_path / "cache"))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *a: None
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/model.pdparams"
        check_same(read_state_dict(url), model)
        server.shutdown()
        check_same(read_state_dict(url), model)  # served from the cache now
    finally:
        server.server_close()
    assert len(os.listdir(tmp_path / "cache")) == 1


def test_missing_file_and_bad_url_are_clear(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(CheckpointError, match="does not exist"):
        read_state_dict(str(tmp_path / "none.pdparams"))
    with pytest.raises(CheckpointError, match="could not download"):
        read_state_dict("http://127.0.0.1:9/none.pdparams")
    assert not os.listdir(tmp_path / "cache")  # no partial file left behind


def test_strict_load_reports_and_leaves_model_untouched(saved):
    model, _ = saved
    other = small_model()
    before = expected(other)
    state = expected(model)
    state.pop("2.bias")
    state["extra.weight"] = np.zeros(3, np.float32)
    state["0.weight"] = np.zeros((5, 3, 3, 3), np.float32)
    with pytest.raises(CheckpointError) as info:
        load_weights(other, state, source="x.pdparams")
    text = str(info.value)
    assert "missing (1): 2.bias" in text and "unexpected (1): extra.weight" in text
    assert "0.weight checkpoint (5, 3, 3, 3) vs model (4, 3, 3, 3)" in text
    for key, value in expected(other).items():
        np.testing.assert_array_equal(value, before[key])


def test_named_differences_are_allowed(saved):
    model, _ = saved
    other = small_model()
    state = expected(model)
    state["2.weight"] = np.zeros((7, 4, 1, 1), np.float32)
    state.pop("2.bias")
    report = load_weights(other, state, allow_shape_mismatch=("2",), allow_missing=("2",))
    assert sorted(report.skipped) == ["2.bias", "2.weight"]
    np.testing.assert_array_equal(other.state_dict()["0.weight"].numpy(), state["0.weight"])


def tiny_segformer(pretrained=None, backbone_pretrained=None):
    """A SegFormer-B0 model section, with weights entries as a PaddleSeg config writes them."""
    backbone = {"type": "mit_b0", "pretrained": backbone_pretrained}
    return {"model": {"type": "SegFormer", "num_classes": 3, "embedding_dim": 32, "backbone": backbone,
                      "pretrained": pretrained}}


def test_config_weights_apply_after_the_pure_build_backbone_first(tmp_path):
    from segkit.config import Config
    from segkit.weights import WeightsSpec

    paddle.seed(1)
    whole, other = Config(tiny_segformer()).build_model(), Config(tiny_segformer()).build_model()
    whole_path, backbone_path = str(tmp_path / "whole.pdparams"), str(tmp_path / "backbone.pdparams")
    paddle.save(whole.state_dict(), whole_path)
    paddle.save(other.backbone.state_dict(), backbone_path)

    both = Config(tiny_segformer(whole_path, backbone_path))
    assert both.weights() == [WeightsSpec(backbone_path, "backbone", True), WeightsSpec(whole_path, "", True)]
    check_same({k: v.numpy() for k, v in both.build_model().state_dict().items()}, whole)  # the model's win
    only_backbone = Config(tiny_segformer(backbone_pretrained=backbone_path)).build_model()
    check_same({k: v.numpy() for k, v in only_backbone.backbone.state_dict().items()}, other.backbone)
    # building reads no file: the weights are applied only when asked for
    Config(tiny_segformer(str(tmp_path / "absent.pdparams"))).build_model(pretrained=False)
    with pytest.raises(CheckpointError, match="absent.pdparams"):
        Config(tiny_segformer(str(tmp_path / "absent.pdparams"))).build_model()
