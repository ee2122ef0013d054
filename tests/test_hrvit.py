"""HRViT: golden parity with the official PyTorch code, any input size, the weight converter, counts."""

import os
import sys

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

from deploy_models import NUM_CLASSES
from helpers import run_predictor, shapes_only, trainable_count, with_pretrained
import segkit.models  # noqa: F401  (registers everything)
from segkit import ops
from segkit.weights import load_weights, read_state_dict
from segkit.errors import CheckpointError, ConfigError
from segkit.models import hrvit
from segkit.models.layers import paddle_kernels
from segkit.models.segformer import SegFormer
from segkit.registry import BACKBONES, MODELS, build
from segkit.weights.torch_pickle import read_torch_zip

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import convert_weights  # noqa: E402  (tools/convert_weights.py)
import hrvit_golden  # noqa: E402  (tests/hrvit_golden.py: the weight generator and the golden file)
from torch_files import FakeStorage, FakeTensor, TorchName, write_fake_torch_checkpoint  # noqa: E402

# Trainable parameter counts from docs/REFERENCE.md: (150 classes, 19 classes).
REFERENCE_PARAMS = {
    "b1": (8_183_118, 8_149_451),
    "b2": (20_809_782, 20_776_115),
    "b3": (28_724_494, 28_623_755),
}


@pytest.fixture(scope="module", params=hrvit_golden.VARIANTS)
def golden_any(request):
    """(variant, official-named weights, {"input", "out0".."out3"}) for b1 and for b2."""
    return (request.param, *hrvit_golden.load_case(request.param))


@pytest.fixture(scope="module")
def golden():
    """b1's official-named weights (PyTorch names and layouts) and its input and outputs."""
    return hrvit_golden.load_case("b1")


def assert_matches_golden(backbone: paddle.nn.Layer, data) -> None:
    backbone.eval()
    with paddle.no_grad():
        outs = backbone(paddle.to_tensor(data["input"]))
    assert len(outs) == 4
    for i, out in enumerate(outs):
        expected = data[f"out{i}"]
        assert tuple(out.shape) == expected.shape
        diff = float(np.abs(out.numpy() - expected).max())
        assert diff < 1e-4, f"out{i}: max abs difference {diff}"


# ----------------------------------------------------------------------------------------------
# Golden parity through the converter
# ----------------------------------------------------------------------------------------------


def test_matches_official_outputs_through_load_weights(golden_any):
    variant, weights, data = golden_any
    backbone = BACKBONES.get(f"hrvit_{variant}")()
    report = load_weights(backbone, weights, source="golden")  # applies remap_checkpoint_keys
    assert len(report.loaded) == len(backbone.state_dict()) == len(weights)
    assert_matches_golden(backbone, data)


def test_b1_matches_official_outputs_via_pretrained_and_the_convert_tool(golden, tmp_path):
    weights, data = golden
    # An official state dict saved as a Paddle file: `pretrained` converts it on the fly.
    official = str(tmp_path / "official_names.pdparams")
    paddle.save(weights, official)
    assert_matches_golden(with_pretrained(hrvit.hrvit_b1_backbone(), official), data)
    # The CLI converts an .npz once; the result holds segkit's own names and loads unchanged.
    official_npz = str(tmp_path / "official_names.npz")
    np.savez(official_npz, **weights)
    converted = str(tmp_path / "converted.pdparams")
    argv = [official_npz, converted, "--backbone", "hrvit_b1"]
    assert convert_weights.main(argv) == 0
    saved = paddle.load(converted, return_numpy=True)
    assert set(saved) == set(hrvit.hrvit_b1_backbone().state_dict())
    assert_matches_golden(with_pretrained(hrvit.hrvit_b1_backbone(), converted), data)


def test_converter_layouts_names_and_purity(golden):
    weights, _ = golden
    before = {k: v.copy() for k, v in list(weights.items())[:50]}
    converted = hrvit.convert_official_state_dict(weights)
    assert all(np.array_equal(weights[k], v) for k, v in before.items())  # input untouched
    # torch Linear (out, in) -> Paddle (in, out); convs keep their layout; BN buffers renamed.
    qkv = weights["features.1.branches.0.0.attn.to_qkv.weight"]
    np.testing.assert_array_equal(converted["stages.0.branches.0.0.attn.qv.weight"], qkv.T)
    np.testing.assert_array_equal(
        converted["stages.1.fusion.paths.1.0.depthwise.weight"], weights["features.2.blocks.1.0.0.weight"]
    )
    np.testing.assert_array_equal(converted["stem.bn1._variance"], weights["stem.bn1.running_var"])
    np.testing.assert_array_equal(
        converted["stages.0.branches.0.0.attn.token_bn._mean"],
        weights["features.1.branches.0.0.attn.attn_bn.running_mean"],
    )
    # Already-converted (segkit) names pass unchanged: applying it twice changes nothing.
    again = hrvit.convert_official_state_dict(converted)
    assert set(again) == set(converted)
    assert all(again[k] is converted[k] for k in converted)


# ----------------------------------------------------------------------------------------------
# mmseg segmentation checkpoints: backbone. / decode_head. prefixes and the head's layout
# ----------------------------------------------------------------------------------------------


def mmseg_head_state(in_channels, channels: int, num_classes: int, seed: int):
    """Random ``decode_head.*`` tensors named and shaped as mmseg's SegformerHead saves them."""
    rng = np.random.default_rng(seed)
    normal = lambda *shape: rng.normal(0.0, 0.05, shape).astype("float32")  # noqa: E731
    state = {}
    for i, c in enumerate(in_channels):
        state[f"decode_head.convs.{i}.conv.weight"] = normal(channels, c, 1, 1)
        state[f"decode_head.convs.{i}.conv.bias"] = normal(channels)
    state["decode_head.fusion_conv.conv.weight"] = normal(channels, channels * len(in_channels), 1, 1)
    state["decode_head.fusion_conv.bn.weight"] = rng.uniform(0.5, 1.5, channels).astype("float32")
    state["decode_head.fusion_conv.bn.bias"] = normal(channels)
    state["decode_head.fusion_conv.bn.running_mean"] = normal(channels)
    state["decode_head.fusion_conv.bn.running_var"] = rng.uniform(0.5, 1.5, channels).astype("float32")
    state["decode_head.fusion_conv.bn.num_batches_tracked"] = np.array(7, dtype="int64")
    state["decode_head.conv_seg.weight"] = normal(num_classes, channels, 1, 1)
    state["decode_head.conv_seg.bias"] = normal(num_classes)
    return state


def mmseg_head_reference(state, feats):
    """mmseg SegformerHead (mlp_norm/act off) in eval mode, straight from the PyTorch-layout tensors."""
    t = lambda name: paddle.to_tensor(state["decode_head." + name])  # noqa: E731
    size = feats[0].shape[2:]
    levels = []
    for i, x in enumerate(feats):
        y = F.conv2d(x, t(f"convs.{i}.conv.weight"), t(f"convs.{i}.conv.bias"))
        levels.append(F.interpolate(y, size=size, mode="bilinear", align_corners=False))
    y = F.conv2d(paddle.concat(levels, axis=1), t("fusion_conv.conv.weight"))  # c1..c4 order
    y = F.batch_norm(
        y, t("fusion_conv.bn.running_mean"), t("fusion_conv.bn.running_var"),
        t("fusion_conv.bn.weight"), t("fusion_conv.bn.bias"), training=False, epsilon=1e-5,
    )
    return F.conv2d(F.relu(y), t("conv_seg.weight"), t("conv_seg.bias"))


def test_mmseg_segmentation_checkpoint_loads_into_model_and_backbone(golden, tmp_path):
    weights, data = golden
    state = {"backbone." + k: v for k, v in weights.items()}
    state["backbone.stem.bn1.num_batches_tracked"] = np.array(3, dtype="int64")
    state.update(mmseg_head_state([32, 64, 128, 256], 256, 150, seed=3))
    state = {"module." + k: v for k, v in state.items()}  # as saved from a distributed wrapper

    model = MODELS.get("hrvit_b1")(num_classes=150)
    report = load_weights(model, state, source="mmseg")
    assert len(report.loaded) == len(model.state_dict())
    model.eval()
    x = paddle.to_tensor(data["input"])
    with paddle.no_grad():
        feats = model.backbone(x)
        np.testing.assert_allclose(feats[3].numpy(), data["out3"], atol=1e-4)
        expected = mmseg_head_reference({k[len("module."):]: v for k, v in state.items()}, feats)
        got = model.head(feats)
        assert float((got - expected).abs().max()) < 1e-4
        logits = model(x)
    assert logits.shape == [1, 150, *data["input"].shape[2:]]

    # The same file as a backbone's `pretrained`: its head keys are ignored, the backbone matches.
    path = str(tmp_path / "mmseg_seg.pdparams")
    paddle.save(state, path)
    assert_matches_golden(with_pretrained(hrvit.hrvit_b1_backbone(), path), data)
    # As a model's `pretrained` for another number of classes: only the classifier is left out.
    other = with_pretrained(hrvit.hrvit_b1(num_classes=19), path)
    np.testing.assert_array_equal(
        other.head.embed[0].weight.numpy(), state["module.decode_head.convs.0.conv.weight"][:, :, 0, 0].T
    )


def test_wrong_variant_checkpoint_is_rejected(golden):
    weights, _ = golden
    with pytest.raises(CheckpointError, match="wrong shape"):
        load_weights(hrvit.hrvit_b2_backbone(), weights, source="golden b1")


# ----------------------------------------------------------------------------------------------
# Any input size
# ----------------------------------------------------------------------------------------------


def reference_stripe_attention(q, v, stripe, heads, scale):
    """NumPy: attention among the valid tokens of each horizontal stripe only (no padding at all)."""
    b, h, w, c = q.shape
    d = c // heads
    out = np.zeros_like(q)
    for top in range(0, h, stripe):
        rows = slice(top, min(top + stripe, h))
        for head in range(heads):
            ch = slice(head * d, (head + 1) * d)
            qs = q[:, rows, :, ch].reshape(b, -1, d)
            vs = v[:, rows, :, ch].reshape(b, -1, d)
            logits = qs @ vs.transpose(0, 2, 1) * scale
            prob = np.exp(logits - logits.max(-1, keepdims=True))
            prob /= prob.sum(-1, keepdims=True)
            out[:, rows, :, ch] = (prob @ vs).reshape(b, rows.stop - rows.start, w, d)
    return out


@pytest.mark.parametrize("h, w, stripe, heads", [(12, 5, 7, 2), (3, 4, 7, 1), (9, 6, 2, 3), (8, 3, 1, 1)])
def test_stripe_attention_padding_equals_attention_on_valid_tokens(h, w, stripe, heads):
    rng = np.random.default_rng(h * w)
    q = rng.normal(size=(2, h, w, 6 * heads)).astype("float32")
    v = rng.normal(size=(2, h, w, 6 * heads)).astype("float32")
    got = hrvit.stripe_attention(paddle.to_tensor(q), paddle.to_tensor(v), stripe, heads, 0.4)
    np.testing.assert_allclose(got.numpy(), reference_stripe_attention(q, v, stripe, heads, 0.4), atol=1e-5)


@pytest.mark.parametrize("h, w, stripe, heads", [(12, 5, 7, 2), (9, 6, 2, 3), (8, 3, 1, 1), (5, 17, 7, 1)])
def test_stripe_attention_operator_attends_within_rows_and_columns(h, w, stripe, heads):
    """segkit_stripe_attention's forward: horizontal heads within stripes of rows, vertical heads within
    stripes of columns, a cut stripe over its valid tokens; against the NumPy reference."""
    assert ops.available()
    rng = np.random.default_rng(h * w + stripe)
    d = 4
    q_rows, q_cols, v_rows, v_cols = (rng.normal(size=(2, h, w, heads * d)).astype("float32") for _ in range(4))
    qv = np.concatenate([q_rows, q_cols, v_rows, v_cols], axis=-1)
    with paddle.no_grad():
        got, values = ops.stripe_attention(paddle.to_tensor(qv), heads, stripe)
    rows = reference_stripe_attention(q_rows, v_rows, stripe, heads, 1.0)
    cols = reference_stripe_attention(q_cols.transpose(0, 2, 1, 3), v_cols.transpose(0, 2, 1, 3), stripe, heads, 1.0)
    np.testing.assert_allclose(got.numpy(), np.concatenate([rows, cols.transpose(0, 2, 1, 3)], axis=-1), atol=1e-5)
    np.testing.assert_array_equal(values.numpy(), np.concatenate([v_rows, v_cols], axis=-1))


@pytest.mark.parametrize("dim, heads, window, size", [(32, 1, 1, (13, 9)), (64, 2, 7, (11, 16)), (48, 2, 2, (5, 7))])
def test_block_inference_operators_equal_paddle_operators(dim, heads, window, size):
    """An HRViT block without gradients (the stripe-attention operator, MixCFN's one 5x5 convolution) gives
    what Paddle's operators (the training and export path) give."""
    assert ops.available()  # else both sides would be Paddle's operators
    paddle.seed(dim)
    block = hrvit.HRViTBlock(dim, heads, window, mlp_ratio=4)
    block.eval()
    bn = block.attn.token_bn  # starts at zero (the block as its shortcut): make the attention count
    bn.weight.set_value(paddle.uniform(bn.weight.shape, min=0.5, max=1.5))
    bn.bias.set_value(paddle.uniform(bn.bias.shape))
    x = paddle.to_tensor(np.random.default_rng(dim).normal(size=(2, *size, dim)).astype("float32"))
    with paddle.no_grad():
        fast = block(x).numpy()
        with paddle_kernels():
            reference = block(x).numpy()
    np.testing.assert_allclose(fast, reference, atol=1e-4, rtol=1e-4)


def test_block_training_gradients_equal_paddle_operators():
    """The stripe-attention operator's gradient (queries, values as keys, the values output) and MixCFN's one
    5x5 convolution back-propagate what Paddle's operators do: input and every parameter gradient."""
    assert ops.available()  # else both sides would be Paddle's operators
    paddle.seed(3)
    block = hrvit.HRViTBlock(64, 2, 7, mlp_ratio=4)
    block.train()
    bn = block.attn.token_bn
    bn.weight.set_value(paddle.uniform(bn.weight.shape, min=0.5, max=1.5))
    x = paddle.to_tensor(np.random.default_rng(3).normal(size=(2, 11, 16, 64)).astype("float32"))
    weights = paddle.to_tensor(np.random.default_rng(4).normal(size=(2, 11, 16, 64)).astype("float32"))

    def gradients():
        block.clear_gradients()
        inputs = x.clone()
        inputs.stop_gradient = False
        (block(inputs) * weights).sum().backward()
        return [inputs.grad.numpy()] + [p.grad.numpy() for p in block.parameters() if not p.stop_gradient]

    fast = gradients()
    with paddle_kernels():
        reference = gradients()
    assert len(fast) == len(reference) > 20
    for got, expected in zip(fast, reference):
        np.testing.assert_allclose(got, expected, atol=2e-4, rtol=1e-3)


def test_any_input_size_gives_ceil_sized_branches(golden):
    """200x264 crashes the official code (ceil(side/4) must be a multiple of 8); segkit runs it."""
    weights, _ = golden
    backbone = hrvit.hrvit_b1_backbone()
    load_weights(backbone, weights)
    backbone.eval()
    x = paddle.to_tensor(np.random.default_rng(0).normal(size=(1, 3, 200, 264)).astype("float32"))
    with paddle.no_grad():
        outs = backbone(x)
    assert [tuple(o.shape) for o in outs] == [(1, 32, 50, 66), (1, 64, 25, 33), (1, 128, 13, 17), (1, 256, 7, 9)]
    assert all(bool(paddle.isfinite(o).all()) for o in outs)
    assert backbone.out_channels == [32, 64, 128, 256] and backbone.out_strides == [4, 8, 16, 32]


def test_up_path_is_nearest_upsampling_cropped_to_the_finer_branch():
    path = hrvit.UpPath(4, 4, factor=4)
    path.eval()
    x = paddle.to_tensor(np.random.default_rng(1).normal(size=(1, 4, 4, 5)).astype("float32"))
    with paddle.no_grad():
        projected = path.pointwise_bn(path.pointwise(x)).numpy()
        got = path(x, [13, 18]).numpy()
    rows, cols = np.arange(13) // 4, np.arange(18) // 4
    np.testing.assert_array_equal(got, projected[:, :, rows][:, :, :, cols])


@pytest.mark.parametrize("variant, shape", [("hrvit_b1", (1, 3, 67, 93)), ("hrvit_b2", (1, 3, 33, 41)), ("hrvit_b3", (1, 3, 29, 35))])
def test_odd_sizes_train_forward_backward_every_parameter_gets_a_gradient(variant, shape):
    paddle.seed(0)
    model = MODELS.get(variant)(num_classes=7)
    model.train()
    x = paddle.to_tensor(np.random.default_rng(0).normal(size=shape).astype("float32"))
    logits = model(x)
    assert isinstance(logits, list) and len(logits) == model.num_outputs == 1
    assert logits[0].shape == [shape[0], 7, shape[2], shape[3]]
    logits[0].mean().backward()
    missing = [n for n, p in model.named_parameters() if not p.stop_gradient and p.grad is None]
    assert not missing, f"no gradient for {missing[:5]}"
    model.eval()
    with paddle.no_grad():
        out = model(x)
    assert out.shape == [shape[0], 7, shape[2], shape[3]]


# ----------------------------------------------------------------------------------------------
# Variants, registry and configuration errors
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["b1", "b2", "b3"])
def test_trainable_parameter_counts_match_reference(variant):
    for num_classes, expected in zip((150, 19), REFERENCE_PARAMS[variant]):
        assert trainable_count(shapes_only(lambda: MODELS.get(f"hrvit_{variant}")(num_classes=num_classes))) == expected


def test_built_from_config_and_usable_under_segformer():
    cfg = {"type": "HRViTSegFormer", "num_classes": 5, "embedding_dim": 64,
           "backbone": {"type": "hrvit_b1", "drop_path_rate": 0.1}}
    model = build(cfg, MODELS, "model")
    assert isinstance(model.backbone, hrvit.HRViT) and model.head.reverse_concat is False
    other = SegFormer(num_classes=3, backbone=hrvit.hrvit_b1_backbone(), embedding_dim=32)
    other.eval()
    with paddle.no_grad():
        assert other(paddle.rand([1, 3, 45, 50])).shape == [1, 3, 45, 50]
    with pytest.raises(ConfigError, match="drop_path_rat"):
        build({"type": "hrvit_b1", "drop_path_rat": 0.1}, BACKBONES, "model.backbone")


def test_bad_hyper_parameters_raise_config_errors():
    with pytest.raises(ConfigError, match="four"):
        hrvit.HRViT(depths=((1,), (1, 1), (1, 1, 1)))
    with pytest.raises(ConfigError, match="even width"):
        hrvit.kronecker_factors(33)


# ----------------------------------------------------------------------------------------------
# Reading PyTorch checkpoints without PyTorch (segkit.weights.torch_pickle.read_torch_zip, also behind read_state_dict)
# ----------------------------------------------------------------------------------------------


def test_torch_checkpoints_are_read_without_torch(tmp_path):
    rng = np.random.default_rng(0)
    floats = FakeStorage(TorchName("torch", "FloatStorage"), "0", rng.normal(size=24).astype("float32"))
    halves = FakeStorage(TorchName("torch", "HalfStorage"), "1", rng.normal(size=6).astype("float16"))
    bf16_values = np.array([1.5, -2.25, 3.0], dtype="float32")
    bf16 = FakeStorage(TorchName("torch", "BFloat16Storage"), "2", (bf16_values.view("uint32") >> 16).astype("uint16"))
    longs = FakeStorage(TorchName("torch", "LongStorage"), "3", np.array([7], dtype="int64"))
    state = {
        # a transposed view with an offset into a shared storage: (3, 4) with strides (1, 3) from 6
        "backbone.features.1.branches.0.0.attn.to_qkv.weight": FakeTensor(floats, 6, (3, 4), (1, 3)),
        "backbone.stem.conv1.bias": FakeTensor(floats, 0, (6,), (1,)),
        "decode_head.conv_seg.bias": FakeTensor(halves, 0, (2, 3), (3, 1)),
        "other.bf16": FakeTensor(bf16, 0, (3,), (1,)),
        "backbone.stem.bn1.num_batches_tracked": FakeTensor(longs, 0, (), ()),
    }
    meta = TorchName("mmcv.utils.config", "ConfigDict")  # an arbitrary class: must not be imported
    path = str(tmp_path / "mmseg.pth")
    write_fake_torch_checkpoint(path, {"meta": {"config": meta, "iter": 160000}, "state_dict": state},
                                [floats, halves, bf16, longs])

    got = read_torch_zip(path)
    assert set(got) == set(state)
    expected = np.lib.stride_tricks.as_strided(floats.data[6:], (3, 4), (4, 12))
    np.testing.assert_array_equal(got["backbone.features.1.branches.0.0.attn.to_qkv.weight"], expected)
    np.testing.assert_array_equal(got["backbone.stem.conv1.bias"], floats.data[:6])
    assert got["decode_head.conv_seg.bias"].dtype == np.float16
    np.testing.assert_array_equal(got["decode_head.conv_seg.bias"], halves.data.reshape(2, 3))
    np.testing.assert_array_equal(got["other.bf16"], bf16_values)
    assert got["backbone.stem.bn1.num_batches_tracked"].shape == () and int(got["backbone.stem.bn1.num_batches_tracked"]) == 7
    # the same reader serves pretrained= and --model_path, so a .pth needs no PyTorch there either
    assert set(read_state_dict(path)) == set(state)

    with pytest.raises(CheckpointError, match="zip-format"):
        not_zip = tmp_path / "old.pth"
        not_zip.write_bytes(b"\x80\x02legacy")
        read_torch_zip(str(not_zip))


# ----------------------------------------------------------------------------------------------
# Shipped configs: the official recipes
# ----------------------------------------------------------------------------------------------

CONFIG_DIR = os.path.join(ROOT, "configs", "hrvit")
OFFICIAL_RECIPES = {  # file -> (backbone, drop path, head width, classes, head lr x10, slide test)
    "hrvit_b1_ade20k_512x512_160k.yml": ("hrvit_b1", 0.1, 256, 150, True, False),
    "hrvit_b2_ade20k_512x512_160k.yml": ("hrvit_b2", 0.2, 256, 150, True, False),
    "hrvit_b3_ade20k_512x512_160k.yml": ("hrvit_b3", 0.3, 768, 150, False, False),
    "hrvit_b1_cityscapes_1024x1024_160k.yml": ("hrvit_b1", 0.15, 256, 19, True, True),
    "hrvit_b2_cityscapes_1024x1024_160k.yml": ("hrvit_b2", 0.2, 256, 19, True, True),
    "hrvit_b3_cityscapes_1024x1024_160k.yml": ("hrvit_b3", 0.3, 768, 19, True, True),
}


@pytest.mark.parametrize("name", sorted(OFFICIAL_RECIPES))
def test_configs_follow_the_official_recipes(name):
    from segkit.config import load_config

    backbone, drop_path, width, classes, head_x10, slide = OFFICIAL_RECIPES[name]
    cfg = load_config(os.path.join(CONFIG_DIR, name), [])
    model = cfg.data["model"]
    assert model["type"] == "HRViTSegFormer" and model["embedding_dim"] == width
    assert model["backbone"] == {"type": backbone, "drop_path_rate": drop_path}
    assert cfg.num_classes() == classes and cfg.iters == 160000
    optimizer, schedule = cfg.data["optimizer"], cfg.data["lr_scheduler"]
    assert optimizer["type"] == "AdamW" and optimizer["weight_decay"] == 0.01
    rules = {rule["name"]: rule for rule in optimizer["custom_cfg"]}
    assert rules["norm"]["weight_decay_mult"] == 0.0
    assert ("head" in rules and rules["head"]["lr_mult"] == 10.0) == head_x10
    assert (schedule["learning_rate"], schedule["power"], schedule["warmup_iters"]) == (6e-5, 1.0, 1500)
    test = cfg.test_config()
    assert test.is_slide == slide
    if slide:
        assert test.crop_size == [1024, 1024] and test.stride == [768, 768]


def test_b1_config_builds_the_recipe_parameter_groups():
    from segkit.config import load_config

    cfg = load_config(os.path.join(CONFIG_DIR, "hrvit_b1_cityscapes_1024x1024_160k.yml"), [])
    model = cfg.build_model()
    assert isinstance(model, hrvit.HRViTSegFormer) and trainable_count(model) == REFERENCE_PARAMS["b1"][1]
    groups = cfg.build_optimizer(model, cfg.build_lr_scheduler())._param_groups
    by_rate = {(g["learning_rate"], g["weight_decay"]): len(g["params"]) for g in groups}
    head = [p for p in model.head.parameters() if not p.stop_gradient]
    layer_norms = [p for layer in model.sublayers() if isinstance(layer, paddle.nn.LayerNorm) for p in layer.parameters()]
    assert by_rate[(10.0, 0.01)] == len(head)
    assert by_rate[(1.0, 0.0)] == len(layer_norms)  # the attention BatchNorm keeps its decay, as upstream


# ----------------------------------------------------------------------------------------------
# Deployment: static export with a dynamic batch and image size
# ----------------------------------------------------------------------------------------------


def test_one_export_serves_any_batch_and_size_including_sizes_the_official_code_rejects(tiny_exports):
    """96x136 and 67x93: window padding in both directions on the deep branches, cropped up paths
    (the session's tiny HRViT export, shared with test_deploy_export.py)."""
    model, _ = tiny_exports.get("hrvit")
    predictor = tiny_exports.predictor("hrvit")  # plain CPU kernels, see helpers.paddle_predictor
    for shape in [(2, 3, 96, 136), (1, 3, 67, 93)]:
        x = np.random.default_rng(0).normal(size=shape).astype("float32")
        got = run_predictor(predictor, x)
        with paddle.no_grad():
            expected = model(paddle.to_tensor(x)).numpy()
        assert got.shape == (shape[0], NUM_CLASSES, shape[2], shape[3])
        np.testing.assert_allclose(got, expected, atol=1e-5)
