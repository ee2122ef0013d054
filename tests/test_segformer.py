"""SegFormer: parity with PaddleSeg 2.8.0 through the real loading path, sizes, remap, strictness."""


import numpy as np
import paddle
import pytest

from helpers import randomise_state, shapes_only, trainable_count, with_pretrained
import segkit.models  # noqa: F401  (registers everything)
from segkit.weights import load_weights, read_state_dict
from paddleseg import models as paddleseg_models  # the test-only oracle (pip install --no-deps paddleseg==2.8.0)
from segkit.config import Config
from segkit.errors import CheckpointError, ConfigError
from segkit.models import segformer as sf
from segkit.registry import MODELS, build


# Trainable parameter counts from docs/REFERENCE.md (150 classes, 19 classes).
REFERENCE_PARAMS = {
    "b0": (3_752_694, 3_719_027),
    "b1": (13_715_798, 13_682_131),
    "b2": (27_461_974, 27_361_235),
    "b3": (47_337_814, 47_237_075),
    "b4": (64_108_374, 64_007_635),
    "b5": (84_708_694, 84_607_955),
}


def _perturbed(name, tensor, rng):
    """Norm scales/shifts, BN running stats and biases moved off their defaults; weights rescaled."""
    value = tensor.numpy()
    if name.endswith("_variance"):
        return rng.uniform(0.5, 2.0, value.shape)
    if name.endswith("_mean"):
        return rng.normal(0.0, 0.2, value.shape)
    if value.ndim == 1:  # biases and norm weights
        return value + rng.normal(0.0, 0.1, value.shape)
    return value * rng.uniform(0.8, 1.2, value.shape)


def randomise(layer: paddle.nn.Layer, seed: int) -> None:
    """Perturb every tensor (norm scales/shifts, BN running stats, biases) so parity is not trivial."""
    randomise_state(layer, seed, _perturbed)


def paddleseg_segformer(variant: str, num_classes: int, seed: int):
    paddle.seed(seed)
    backbone = getattr(paddleseg_models.backbones, f"MixVisionTransformer_{variant.upper()}")()
    model = paddleseg_models.SegFormer(num_classes, backbone, sf.SEGFORMER_DECODER_DIMS[variant.upper()])
    randomise(model, seed)
    return model.eval()


@pytest.fixture(scope="module")
def saved_b0(tmp_path_factory):
    """A PaddleSeg SegFormer-B0 (19 classes), saved as PaddleSeg saves model.pdparams."""
    ref = paddleseg_segformer("b0", 19, seed=1)
    path = str(tmp_path_factory.mktemp("ckpt") / "model.pdparams")
    paddle.save(ref.state_dict(), path)
    return ref, path


def max_diff(a: paddle.Tensor, b: paddle.Tensor) -> float:
    return float((a - b).abs().max())


@pytest.mark.parametrize("shape", [(1, 3, 64, 64), (2, 3, 77, 101)])
def test_b0_matches_paddleseg_after_loading_its_checkpoint(saved_b0, shape):
    ref, path = saved_b0
    model = sf.segformer_b0(num_classes=19)
    report = load_weights(model, read_state_dict(path), source=path)
    assert len(report.loaded) == len(model.state_dict())
    model.eval()
    x = paddle.to_tensor(np.random.default_rng(2).normal(size=shape).astype("float32"))
    with paddle.no_grad():
        expected = ref(x)[0]
        got = model(x)
    assert got.shape == [shape[0], 19, shape[2], shape[3]]
    assert float(expected.abs().max()) > 0.1  # the comparison is not between two near-zero maps
    assert max_diff(got, expected) <= 1e-4


SEGFORMER_B0 = {"type": "SegFormer", "num_classes": 19, "embedding_dim": 256, "backbone": {"type": "mit_b0"}}


def test_b0_pretrained_argument_loads_paddleseg_file(saved_b0):
    ref, path = saved_b0
    model = build(SEGFORMER_B0, MODELS, "model")
    assert isinstance(model, sf.SegFormer)
    fresh = model.head.classifier.weight.numpy().copy()
    model = Config({"model": {**SEGFORMER_B0, "pretrained": path}}).build_model().eval()
    assert not np.allclose(model.head.classifier.weight.numpy(), fresh)
    x = paddle.to_tensor(np.random.default_rng(3).normal(size=(1, 3, 64, 96)).astype("float32"))
    with paddle.no_grad():
        assert max_diff(model(x), ref(x)[0]) <= 1e-4


@pytest.mark.parametrize("variant", ["b1", "b2"])
def test_bigger_variants_match_paddleseg(variant, tmp_path):
    ref = paddleseg_segformer(variant, 7, seed=4)
    path = str(tmp_path / "model.pdparams")
    paddle.save(ref.state_dict(), path)
    model = getattr(sf, f"segformer_{variant}")(num_classes=7)
    load_weights(model, read_state_dict(path), source=path)
    model.eval()
    rng = np.random.default_rng(5)
    for shape in [(1, 3, 64, 64), (2, 3, 45, 71)]:
        x = paddle.to_tensor(rng.normal(size=shape).astype("float32"))
        with paddle.no_grad():
            assert max_diff(model(x), ref(x)[0]) <= 1e-4


def test_backbone_pretrained_paddleseg_weights_with_classification_head(tmp_path):
    paddle.seed(6)
    ref = paddleseg_models.backbones.MixVisionTransformer_B0()
    randomise(ref, 6)
    ref.eval()
    state = {k: v.numpy() for k, v in ref.state_dict().items()}
    state["head.weight"] = np.zeros((256, 1000), "float32")  # ImageNet classifier in MiT releases
    state["head.bias"] = np.zeros((1000,), "float32")
    path = str(tmp_path / "mit_b0.pdparams")
    paddle.save(state, path)

    backbone = with_pretrained(sf.mit_b0(), path)
    backbone.eval()
    assert backbone.out_channels == [32, 64, 160, 256]
    assert backbone.out_strides == [4, 8, 16, 32]
    x = paddle.to_tensor(np.random.default_rng(7).normal(size=(1, 3, 77, 101)).astype("float32"))
    with paddle.no_grad():
        for got, expected in zip(backbone(x), ref(x)):
            assert got.shape == expected.shape
            assert max_diff(got, expected) <= 1e-4

    del state["head.bias"]
    state["patch_embed1.proj.extra"] = np.zeros((1,), "float32")
    paddle.save(state, path)
    with pytest.raises(CheckpointError, match=r"stages\.0\.patch_embed\.proj\.extra"):
        with_pretrained(sf.mit_b0(), path)


@pytest.mark.parametrize("variant", sorted(REFERENCE_PARAMS))
def test_trainable_parameter_counts_match_reference(variant):
    for num_classes, expected in zip((150, 19), REFERENCE_PARAMS[variant]):
        model = shapes_only(lambda: getattr(sf, f"segformer_{variant}")(num_classes=num_classes))
        assert trainable_count(model) == expected, (variant, num_classes)


def test_remap_keys_on_tiny_dicts():
    one = np.zeros(1, "float32")
    upstream = {
        "backbone.patch_embed1.proj.weight": one,
        "backbone.patch_embed4.norm.bias": one,
        "backbone.block1.0.attn.q.weight": one,
        "backbone.block2.1.attn.norm.weight": one,
        "backbone.block3.12.mlp.dwconv.dwconv.weight": one,
        "backbone.block4.0.mlp.fc2.bias": one,
        "backbone.norm3.weight": one,
        "linear_c4.proj.weight": one,
        "linear_c1.proj.bias": one,
        "linear_fuse._conv.weight": one,
        "linear_fuse._batch_norm._variance": one,
        "linear_pred.bias": one,
        "something.else": one,
    }
    expected = {
        "backbone.stages.0.patch_embed.proj.weight",
        "backbone.stages.3.patch_embed.norm.bias",
        "backbone.stages.0.blocks.0.attn.q.weight",
        "backbone.stages.1.blocks.1.attn.sr_norm.weight",
        "backbone.stages.2.blocks.12.ffn.dwconv.weight",
        "backbone.stages.3.blocks.0.ffn.fc2.bias",
        "backbone.stages.2.norm.weight",
        "head.embed.3.weight",
        "head.embed.0.bias",
        "head.fuse.conv.weight",
        "head.fuse.bn._variance",
        "head.classifier.bias",
        "something.else",
    }
    remapped = sf.convert_segformer_checkpoint(dict(upstream))
    assert set(remapped) == expected
    assert sf.convert_segformer_checkpoint(dict(remapped)).keys() == remapped.keys()
    assert remapped["head.embed.3.weight"] is one

    backbone_only = sf.MixVisionTransformer.remap_checkpoint_keys(
        {"block2.0.attn.sr.weight": one, "norm1.bias": one, "head.weight": one}
    )
    assert set(backbone_only) == {"stages.1.blocks.0.attn.sr.weight", "stages.0.norm.bias", "head.weight"}


def test_segkit_state_dict_round_trips_through_the_remap():
    model = sf.segformer_b0(num_classes=3)
    names = list(model.state_dict())
    assert list(sf.convert_segformer_checkpoint({k: 0 for k in names})) == names
    backbone_names = list(model.backbone.state_dict())
    assert list(sf.MixVisionTransformer.remap_checkpoint_keys({k: 0 for k in backbone_names})) == backbone_names


def test_checkpoint_of_another_model_or_class_count_fails_naming_keys(saved_b0, tmp_path):
    _, path = saved_b0  # B0 with 19 classes
    with pytest.raises(CheckpointError, match=r"head\.classifier\.weight"):
        load_weights(sf.segformer_b0(num_classes=150), read_state_dict(path), source=path)
    other = str(tmp_path / "b1.pdparams")
    paddle.save(sf.segformer_b1(num_classes=19).state_dict(), other)
    with pytest.raises(CheckpointError, match=r"backbone\.stages\.0\.patch_embed\.proj\.weight"):
        load_weights(sf.segformer_b0(num_classes=19), read_state_dict(other), source=other)


def test_pretrained_with_other_class_count_keeps_fresh_classifier(saved_b0):
    ref, path = saved_b0
    model = with_pretrained(sf.segformer_b0(num_classes=5), path)
    ref_state = ref.state_dict()
    np.testing.assert_array_equal(model.head.fuse.conv.weight.numpy(), ref_state["linear_fuse._conv.weight"].numpy())
    assert model.head.classifier.weight.shape == [5, 256, 1, 1]


@pytest.mark.parametrize("reverse_concat", [True, False])
def test_all_mlp_head_equals_concat_then_fuse(reverse_concat):
    """The folded decoder equals the textbook one: linear, resize, concat, 1x1 conv, BN, ReLU."""
    paddle.seed(8)
    head = sf.AllMLPHead(in_channels=[8, 16, 24, 32], embed_dim=12, num_classes=5, reverse_concat=reverse_concat)
    randomise(head, 8)
    head.eval()
    rng = np.random.default_rng(9)
    sizes = [(29, 37), (15, 19), (8, 10), (4, 5)]
    widths = [8, 16, 24, 32]
    feats = [paddle.to_tensor(rng.normal(size=(2, c, h, w)).astype("float32")) for c, (h, w) in zip(widths, sizes)]
    embedded = []
    for linear, feat in zip(head.embed, feats):
        y = linear(feat.flatten(2).transpose([0, 2, 1])).transpose([0, 2, 1]).reshape([2, 12, *feat.shape[2:]])
        embedded.append(paddle.nn.functional.interpolate(y, size=sizes[0], mode="bilinear", align_corners=False))
    if reverse_concat:
        embedded = embedded[::-1]
    bn = head.fuse.bn
    x = paddle.nn.functional.conv2d(paddle.concat(embedded, axis=1), head.fuse.conv.weight)
    x = (x - bn._mean.reshape([1, -1, 1, 1])) / paddle.sqrt(bn._variance.reshape([1, -1, 1, 1]) + 1e-5)
    x = paddle.nn.functional.relu(x * bn.weight.reshape([1, -1, 1, 1]) + bn.bias.reshape([1, -1, 1, 1]))
    expected = head.classifier(x)
    with paddle.no_grad():
        assert max_diff(head(feats), expected) <= 1e-4


def test_training_forward_returns_list_and_every_parameter_gets_a_gradient():
    paddle.seed(10)
    model = sf.segformer_b0(num_classes=4, drop_path_rate=0.0)
    model.train()
    out = model(paddle.randn([2, 3, 67, 93]))
    assert isinstance(out, list) and len(out) == model.num_outputs == 1
    assert out[0].shape == [2, 4, 67, 93]
    out[0].mean().backward()
    no_grad = [p.name for p in model.parameters() if not p.stop_gradient and p.grad is None]
    assert not no_grad


def test_segformer_accepts_any_backbone_declaring_out_channels():
    class TwoLevel(paddle.nn.Layer):
        out_channels = [6, 10]
        out_strides = [4, 8]

        def __init__(self):
            super().__init__()
            self.a = paddle.nn.Conv2D(3, 6, 3, stride=4, padding=1)
            self.b = paddle.nn.Conv2D(6, 10, 3, stride=2, padding=1)

        def forward(self, x):
            c1 = self.a(x)
            return [c1, self.b(c1)]

    model = sf.SegFormer(num_classes=3, backbone=TwoLevel(), embedding_dim=8).eval()
    assert model(paddle.randn([1, 3, 50, 70])).shape == [1, 3, 50, 70]
    with pytest.raises(ConfigError, match="out_channels"):
        sf.SegFormer(num_classes=3, backbone=paddle.nn.Conv2D(3, 3, 1), embedding_dim=8)


def test_layer_norm_epsilons_match_paddleseg_layer_by_layer():
    """Output parity cannot see 1e-5 vs 1e-6; compare each LayerNorm with its upstream twin by name."""
    paddle.seed(11)
    ref = paddleseg_models.SegFormer(19, paddleseg_models.backbones.MixVisionTransformer_B0(), 256)
    model = sf.segformer_b0(num_classes=19)
    ours = dict(model.named_sublayers())
    compared = 0
    for name, layer in ref.named_sublayers():
        if isinstance(layer, paddle.nn.LayerNorm):
            twin = sf.convert_segformer_checkpoint({name + ".weight": None})
            twin_name = next(iter(twin))[: -len(".weight")]
            assert isinstance(ours[twin_name], paddle.nn.LayerNorm), twin_name
            assert ours[twin_name]._epsilon == layer._epsilon, (name, twin_name)
            compared += 1
    assert compared == 4 + 8 * 2 + 6 + 4  # patch embeds, block norms, sr norms (blocks of stages 1-3), stage norms
