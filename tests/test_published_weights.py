"""Published SegFormer and SegNeXt checkpoints: NVlabs, Hugging Face, mmseg 1.x and official SegNeXt files
load through segkit's converters and give the logits of each codebase's own PyTorch code.

The expected logits are golden data (``tests/data/upstream_golden.npz``, written by
``tools/dev/make_upstream_golden.py`` from transformers, mmseg 1.x and NVlabs' code); the weights are
regenerated here with NumPy in the upstream names and layouts and written in the upstream file format
(``.safetensors``, ``.pth``), so the whole path is exercised: file reader, format detection, key and
layout conversion, strict loading, forward. Input 67 x 93 (not a multiple of 32), eval mode.
"""

import os

import numpy as np
import paddle
import pytest
from safetensors.numpy import save_file

import segkit.models  # noqa: F401  (registers everything)
from segkit.config import load_config
from segkit.errors import CheckpointError
from segkit.models.segformer import convert_segformer_checkpoint, detect_segformer_format
from segkit.models.segnext import detect_segnext_format
from segkit.models.segnext import remap_checkpoint_keys as convert_segnext_checkpoint
from segkit.registry import BACKBONES, MODELS
from segkit.weights import WeightsSpec, apply_weights, load_weights, read_state_dict

import convert_weights  # tools/convert_weights.py
from helpers import with_pretrained
from torch_files import save_torch_state_dict
from upstream_golden import load_case

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOLERANCE = 1e-4
CLASSES = 7
# golden case -> (segkit model, its extra arguments, the format segkit must recognise)
SEGFORMER_CASES = {
    "hf_segformer_b0": ("segformer_b0", {}, "huggingface"),
    "hf_segformer_b2": ("segformer_b2", {}, "huggingface"),
    "nvlabs_segformer_b0": ("segformer_b0", {}, "nvlabs"),
    "mmseg_segformer_b0": ("segformer_b0", {"mmseg_head": True}, "mmseg"),
    "mmseg_segformer_b2": ("segformer_b2", {"mmseg_head": True}, "mmseg"),
}
SEGNEXT_CASES = {"mmseg_segnext_t": "segnext_t", "mmseg_segnext_b": "segnext_b"}


@pytest.fixture(scope="module")
def cases():
    """Golden cases, each loaded (and its weights drawn) once per module."""
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = load_case(name)
        return cache[name]

    return get


def write_upstream_file(folder, case: str, weights) -> str:
    """Write ``weights`` as the codebase of ``case`` publishes them; return the path to give segkit."""
    if case.startswith("hf_"):  # a Hugging Face model folder, as save_pretrained / the Hub has it
        save_file(weights, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
        return str(folder)
    path = os.path.join(folder, f"{case}.pth")
    save_torch_state_dict(path, weights, wrapper="state_dict")  # mmseg (0.x and 1.x) checkpoints
    return path


def eval_logits(model: paddle.nn.Layer, image: np.ndarray) -> np.ndarray:
    model.eval()
    with paddle.no_grad():
        return model(paddle.to_tensor(image)).numpy()


def assert_close(got: np.ndarray, expected: np.ndarray, what: str) -> None:
    assert got.shape == expected.shape, what
    diff = float(np.abs(got - expected).max())
    assert diff < TOLERANCE, f"{what}: max abs difference {diff}"


# ----------------------------------------------------------------------------------------------
# Parity through the published file formats
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(SEGFORMER_CASES))
def test_segformer_checkpoint_gives_upstream_logits(case, cases, tmp_path):
    weights, data, _ = cases(case)
    name, kwargs, fmt = SEGFORMER_CASES[case]
    assert detect_segformer_format(weights) == fmt
    path = write_upstream_file(tmp_path, case, weights)
    model = with_pretrained(MODELS.get(name)(num_classes=CLASSES, **kwargs), path)
    assert_close(eval_logits(model, data["input"]), data["logits"], case)


@pytest.mark.parametrize("case", ["hf_segformer_b0", "nvlabs_segformer_b0", "mmseg_segformer_b0"])
def test_mit_backbone_from_imagenet_style_file_gives_upstream_features(case, cases, tmp_path):
    """A backbone-only file in each codebase's names (with its ImageNet classifier, where it has one)."""
    weights, data, _ = cases(case)
    if case.startswith("hf_"):  # SegformerForImageClassification: segformer.encoder.* + classifier.*
        backbone = {k: v for k, v in weights.items() if k.startswith("segformer.")}
        backbone["classifier.weight"] = np.zeros((10, 256), "float32")
    else:  # NVlabs mit_b0.pth: bare names + head.*; mmseg mit_b0.pth: bare names, no classifier
        backbone = {k[len("backbone.") :]: v for k, v in weights.items() if k.startswith("backbone.")}
        if case.startswith("nvlabs_"):
            backbone["head.weight"] = np.zeros((10, 256), "float32")
    path = str(tmp_path / "imagenet.pth")
    save_torch_state_dict(path, backbone)
    model = with_pretrained(BACKBONES.get("mit_b0")(), path)
    model.eval()
    with paddle.no_grad():
        feats = model(paddle.to_tensor(data["input"]))
    for i, feat in enumerate(feats):
        assert_close(feat.numpy(), data[f"feat{i}"], f"{case} feat{i}")


@pytest.mark.parametrize("case", sorted(SEGNEXT_CASES))
def test_segnext_checkpoint_gives_upstream_logits(case, cases, tmp_path):
    """segkit's fixed eval bases (seed DEFAULT_EVAL_SEED) are the draw the upstream NMF was given."""
    weights, data, _ = cases(case)
    assert detect_segnext_format(weights) == "official"
    model = with_pretrained(MODELS.get(SEGNEXT_CASES[case])(num_classes=CLASSES), write_upstream_file(tmp_path, case, weights))
    bases = data["bases"] / np.linalg.norm(data["bases"], axis=1, keepdims=True)
    np.testing.assert_allclose(model.head.ham.nmf.eval_bases.numpy(), bases, rtol=0, atol=1e-7)
    assert_close(eval_logits(model, data["input"]), data["logits"], case)


def test_mscan_backbone_takes_official_imagenet_and_whole_model_files(cases, tmp_path):
    weights, _, _ = cases("mmseg_segnext_t")
    whole = with_pretrained(BACKBONES.get("mscan_t")(), write_upstream_file(tmp_path, "mmseg_segnext_t", weights))
    imagenet = {k[len("backbone.") :]: v for k, v in weights.items() if k.startswith("backbone.")}
    imagenet["head.weight"] = np.zeros((10, 256), "float32")  # the official mscan_t.pth classifier
    path = str(tmp_path / "mscan_t.pth")
    save_torch_state_dict(path, imagenet)
    bare = with_pretrained(BACKBONES.get("mscan_t")(), path)
    for key, value in whole.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), bare.state_dict()[key].numpy(), err_msg=key)
    layer_scale = weights["backbone.block1.0.layer_scale_1"]
    np.testing.assert_array_equal(bare.stages[0].blocks[0].attn_scale.numpy(), layer_scale.reshape(-1, 1, 1))


def test_model_path_and_convert_tool_read_published_files(cases, tmp_path):
    """``--model_path`` (apply_weights) and tools/convert_weights.py take a Hub folder / mmseg .pth as they are."""
    weights, data, _ = cases("hf_segformer_b0")
    folder = write_upstream_file(tmp_path, "hf_segformer_b0", weights)
    model = MODELS.get("segformer_b0")(num_classes=CLASSES)
    apply_weights(model, WeightsSpec(folder))
    assert_close(eval_logits(model, data["input"]), data["logits"], "--model_path")
    older = tmp_path / "hub_snapshot_without_safetensors"  # older Hub uploads: pytorch_model.bin only
    older.mkdir()
    save_torch_state_dict(str(older / "pytorch_model.bin"), weights)
    assert {k: v.shape for k, v in read_state_dict(str(older)).items()} == {k: v.shape for k, v in weights.items()}

    weights, data, _ = cases("mmseg_segformer_b0")
    source = write_upstream_file(tmp_path, "mmseg_segformer_b0", weights)
    target = str(tmp_path / "converted.pdparams")
    argv = [source, target, "--model", "segformer_b0", "--num_classes", str(CLASSES), "--model_args", "mmseg_head=true"]
    assert convert_weights.main(argv) == 0
    converted = paddle.load(target, return_numpy=True)
    model = MODELS.get("segformer_b0")(num_classes=CLASSES, mmseg_head=True)
    assert set(converted) == set(model.state_dict())
    load_weights(model, converted)
    assert_close(eval_logits(model, data["input"]), data["logits"], "convert_weights")


# ----------------------------------------------------------------------------------------------
# Refusals: a missing or extra tensor, per format, is named; an unknown file is reported
# ----------------------------------------------------------------------------------------------

# case -> (segkit model, kwargs, a tensor to remove, the segkit name it maps to)
DAMAGE = {
    "hf_segformer_b0": ("segformer_b0", {}, "decode_head.linear_c.2.proj.weight", "head.embed.2.weight"),
    "nvlabs_segformer_b0": ("segformer_b0", {}, "backbone.block2.1.attn.kv.weight",
                            "backbone.stages.1.blocks.1.attn.kv.weight"),
    "mmseg_segformer_b0": ("segformer_b0", {"mmseg_head": True}, "decode_head.convs.3.bn.running_var",
                           "head.level_bn.3._variance"),
    "mmseg_segnext_t": ("segnext_t", {}, "backbone.block3.4.attn.spatial_gating_unit.conv2_2.weight",
                        "backbone.stages.2.blocks.4.attn.msca.strips.2.1.weight"),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_missing_or_extra_tensor_is_refused_naming_it(case, cases):
    weights, _, _ = cases(case)
    name, kwargs, removed, segkit_name = DAMAGE[case]
    model = MODELS.get(name)(num_classes=CLASSES, **kwargs)
    before = {k: v.numpy().copy() for k, v in model.state_dict().items()}

    missing = {k: v for k, v in weights.items() if k != removed}
    with pytest.raises(CheckpointError, match=r"missing \(1\): " + segkit_name.replace(".", r"\.")):
        load_weights(model, missing, source=case)

    extra = dict(weights, **{"decode_head.extra_conv.weight": np.zeros((3, 3), "float32")})
    with pytest.raises(CheckpointError, match=r"unexpected \(1\): decode_head\.extra_conv\.weight"):
        load_weights(model, extra, source=case)
    for key, value in model.state_dict().items():  # refused loads leave the model untouched
        np.testing.assert_array_equal(value.numpy(), before[key], err_msg=key)


def test_mmseg_segformer_checkpoint_needs_the_mmseg_head(cases):
    weights, _, _ = cases("mmseg_segformer_b0")
    with pytest.raises(CheckpointError, match=r"has mmseg 1\.x's SegformerHead .* --opts model\.mmseg_head=true"):
        load_weights(MODELS.get("segformer_b0")(num_classes=CLASSES), weights, source="mmseg.pth")
    nvlabs, _, _ = cases("nvlabs_segformer_b0")
    with pytest.raises(CheckpointError, match=r"has the paper's decoder .* mmseg_head: false"):
        load_weights(MODELS.get("segformer_b0")(num_classes=CLASSES, mmseg_head=True), nvlabs, source="nvlabs.pth")
    # the shipped config with the one override the README gives
    opts = ["model.mmseg_head=true", "model.backbone.pretrained=null", f"model.num_classes={CLASSES}"]
    model = load_config(os.path.join(ROOT, "configs", "segformer", "segformer_b0_ade20k_512x512_160k.yml"), opts)
    load_weights(model.build_model(), weights, source="mmseg.pth")


def test_unrecognised_file_is_refused_with_the_report(tmp_path):
    path = str(tmp_path / "other.safetensors")
    save_file({"encoder.conv.weight": np.zeros((2, 3), "float32")}, path)
    assert set(read_state_dict(path)) == {"encoder.conv.weight"}
    with pytest.raises(CheckpointError, match=r"(?s)loaded 0 of .*unexpected \(1\): encoder\.conv\.weight"):
        with_pretrained(MODELS.get("segformer_b0")(num_classes=CLASSES), path)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(CheckpointError, match="broken.safetensors: not a readable .safetensors file"):
        read_state_dict(str(broken))


# ----------------------------------------------------------------------------------------------
# The pure converters
# ----------------------------------------------------------------------------------------------


def test_converters_are_pure_and_idempotent_on_segkit_names():
    for model, convert in ((MODELS.get("segformer_b0")(num_classes=3), convert_segformer_checkpoint),
                           (MODELS.get("segformer_b0")(num_classes=3, mmseg_head=True), convert_segformer_checkpoint),
                           (MODELS.get("segnext_t")(num_classes=3), convert_segnext_checkpoint)):
        state = {k: v.numpy() for k, v in model.state_dict().items()}
        out = convert(state)
        assert list(out) == list(state)
        assert all(out[k] is state[k] for k in state)


def test_layouts_key_value_stacking_and_qkv_split():
    rng = np.random.default_rng(0)
    q, k, v = (rng.normal(size=(4, 4)).astype("float32") for _ in range(3))
    fc1 = rng.normal(size=(16, 4)).astype("float32")
    hf = {"segformer.encoder.block.0.1.attention.self.query.weight": q,
          "segformer.encoder.block.0.1.attention.self.key.weight": k,
          "segformer.encoder.block.0.1.attention.self.value.weight": v,
          "segformer.encoder.block.0.1.mlp.dense1.weight": fc1}
    frozen = {name: value.copy() for name, value in hf.items()}
    out = convert_segformer_checkpoint(hf)
    assert all(np.array_equal(hf[name], frozen[name]) for name in hf)  # input untouched
    np.testing.assert_array_equal(out["backbone.stages.0.blocks.1.attn.q.weight"], q.T)
    np.testing.assert_array_equal(out["backbone.stages.0.blocks.1.attn.kv.weight"], np.concatenate([k, v]).T)
    np.testing.assert_array_equal(out["backbone.stages.0.blocks.1.ffn.fc1.weight"], fc1.T)

    mmseg = {"backbone.layers.1.1.0.attn.attn.in_proj_weight": np.concatenate([q, k, v]),
             "backbone.layers.1.1.0.ffn.layers.0.weight": fc1[:, :, None, None],
             "decode_head.convs.0.bn.running_mean": q[0], "decode_head.convs.0.bn.num_batches_tracked": np.array(3)}
    out = convert_segformer_checkpoint(mmseg)
    assert set(out) == {"backbone.stages.1.blocks.0.attn.q.weight", "backbone.stages.1.blocks.0.attn.kv.weight",
                        "backbone.stages.1.blocks.0.ffn.fc1.weight", "head.level_bn.0._mean"}
    np.testing.assert_array_equal(out["backbone.stages.1.blocks.0.attn.kv.weight"], np.concatenate([k, v]).T)
    np.testing.assert_array_equal(out["backbone.stages.1.blocks.0.ffn.fc1.weight"], fc1.T)
