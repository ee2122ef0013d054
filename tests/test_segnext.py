"""SegNeXt: parity with paddleseg 2.8 (the oracle), checkpoint keys, parameter counts, NMF randomness."""

from pathlib import Path

import numpy as np
import paddle
import pytest

import paddleseg.models.backbones.mscan as ps_mscan  # the oracle (test-only dependency)
import paddleseg.models.segnext as ps_segnext

from helpers import randomise_state, shapes_only, trainable_count, with_pretrained
import segkit.models  # noqa: F401  (registers the models)
from segkit.weights import load_weights
from segkit.config import Config
from segkit.config.paddleseg import nmf_args, segnext_decoder_args
from segkit.errors import ConfigError
from segkit.models.segnext import SegNeXt, remap_checkpoint_keys
from segkit.registry import BACKBONES, MODELS

ROOT = Path(__file__).resolve().parents[1]
PADDLESEG_HEAD = {"channels": 256, "ham_channels": 256, "ham_kwargs": {"MD_R": 16}}
OFFICIAL_B_HEAD = {"channels": 512, "ham_channels": 512, "ham_kwargs": {"MD_R": 64}}


def _far_from_defaults(name, tensor, rng):
    """Norms, running statistics and layer scales far from their defaults; other tensors unchanged."""
    shape = tensor.shape
    if name.endswith("_variance"):
        return rng.uniform(0.5, 1.5, shape)
    if name.endswith("_mean"):
        return rng.normal(0, 0.2, shape)
    if "layer_scale" in name:
        return rng.uniform(0.005, 0.03, shape)  # larger scales compound to overflow over 12+ blocks
    if len(shape) == 1 and name.endswith("weight"):  # BN / GN / LN scale
        return rng.uniform(0.5, 1.5, shape)
    if name.endswith("bias"):
        return rng.normal(0, 0.1, shape)
    return None


def randomise(model: paddle.nn.Layer, seed: int) -> None:
    """Give norms, running statistics and layer scales values far from their defaults (numpy RNG only)."""
    randomise_state(model, seed, _far_from_defaults)


def oracle(size: str, head: dict, num_classes: int = 19, seed: int = 0) -> paddle.nn.Layer:
    paddle.seed(seed)
    backbone = getattr(ps_mscan, f"MSCAN_{size}")()
    model = ps_segnext.SegNeXt(backbone, dict(head, ham_kwargs=dict(head["ham_kwargs"])), num_classes)
    randomise(model, seed)
    return model


def segnext(size: str, head: dict, num_classes: int) -> SegNeXt:
    """segkit's SegNeXt with MSCAN-``size`` and a decoder given in PaddleSeg's ``decoder_cfg`` spelling."""
    backbone = BACKBONES.get(f"mscan_{size.lower()}")()
    return SegNeXt(num_classes=num_classes, backbone=backbone, **segnext_decoder_args(head))


def segkit_copy(reference: paddle.nn.Layer, size: str, head: dict, num_classes: int = 19) -> SegNeXt:
    model = segnext(size, head, num_classes)
    state = {k: v.numpy() for k, v in reference.state_dict().items()}
    load_weights(model, state, source="paddleseg oracle")
    model.head.ham.nmf.seed_eval_bases(None)  # upstream's per-call random bases in eval too
    return model


def run(model: paddle.nn.Layer, x: np.ndarray, seed: int) -> np.ndarray:
    paddle.seed(seed)
    out = model(paddle.to_tensor(x))
    return (out[0] if isinstance(out, list) else out).numpy()


@pytest.fixture(scope="module")
def tiny_pair():
    reference = oracle("T", PADDLESEG_HEAD)
    return reference, segkit_copy(reference, "T", PADDLESEG_HEAD)


@pytest.fixture(scope="module")
def base_official_pair():
    reference = oracle("B", OFFICIAL_B_HEAD, num_classes=7, seed=1)
    return reference, segkit_copy(reference, "B", OFFICIAL_B_HEAD, num_classes=7)


def _assert_eval_parity(pair, shape, seed):
    reference, ours = pair
    reference.eval()
    ours.eval()
    x = np.random.default_rng(seed).normal(size=shape).astype("float32")
    expected, got = run(reference, x, seed), run(ours, x, seed)
    assert np.isfinite(expected).all() and expected.std() > 0.1, "the oracle output is degenerate; fix randomise()"
    assert got.shape == expected.shape == (shape[0], reference.decode_head.conv_seg._out_channels) + shape[2:]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)
    return got


@pytest.mark.parametrize("shape", [(1, 3, 64, 64), (2, 3, 72, 88), (2, 3, 64, 64), (1, 3, 72, 88)])
def test_eval_parity_paddleseg_head(tiny_pair, shape):
    _assert_eval_parity(tiny_pair, shape, seed=11)


@pytest.mark.parametrize("shape", [(1, 3, 64, 96), (2, 3, 56, 72)])
def test_eval_parity_official_base_head(base_official_pair, shape):
    _assert_eval_parity(base_official_pair, shape, seed=5)


def test_eval_parity_small_paddleseg_head():
    reference = oracle("S", PADDLESEG_HEAD, num_classes=5, seed=3)
    ours = segkit_copy(reference, "S", PADDLESEG_HEAD, num_classes=5)
    _assert_eval_parity((reference, ours), (2, 3, 40, 56), seed=2)


def test_eval_parity_large_official_head():
    head = {"channels": 1024, "ham_channels": 1024, "ham_kwargs": {"MD_R": 64}}
    reference = oracle("L", head, num_classes=3, seed=4)
    ours = segkit_copy(reference, "L", head, num_classes=3)
    _assert_eval_parity((reference, ours), (1, 3, 64, 80), seed=9)


def test_training_forward_and_gradients_match(tiny_pair):
    """Train mode draws stochastic depth, NMF bases and dropout in PaddleSeg's order; gradients agree too."""
    reference, ours = tiny_pair
    reference.train()
    ours.train()
    x = np.random.default_rng(4).normal(size=(2, 3, 64, 64)).astype("float32")
    weight = paddle.to_tensor(np.random.default_rng(5).normal(size=(2, 19, 64, 64)).astype("float32"))
    outs = []
    for model in (reference, ours):
        paddle.seed(21)
        out = model(paddle.to_tensor(x))
        assert isinstance(out, list) and len(out) == 1
        (out[0] * weight).mean().backward()
        outs.append(out[0].numpy())
    np.testing.assert_allclose(outs[1], outs[0], rtol=0, atol=1e-4)
    theirs = remap_checkpoint_keys({k: p.grad.numpy() for k, p in reference.named_parameters() if p.grad is not None})
    mine = {k: p.grad.numpy() for k, p in ours.named_parameters() if not p.stop_gradient}
    assert set(theirs) == set(mine)
    for key in ("backbone.stages.0.embed.0.weight", "backbone.stages.2.blocks.4.attn.msca.strips.2.1.weight",
                "head.ham.proj_in.weight", "head.squeeze.1.weight", "head.classifier.bias"):
        scale = np.abs(theirs[key]).max()
        np.testing.assert_allclose(mine[key], theirs[key], rtol=0, atol=1e-4 * max(scale, 1.0))
    for model in (reference, ours):
        model.clear_gradients()
        model.eval()


@pytest.mark.parametrize("ham_kwargs", [{"MD_R": 8, "MD_S": 2}, {"MD_R": 4, "SPATIAL": False, "EVAL_STEPS": 3}])
def test_nmf_variants_match_paddleseg(ham_kwargs):
    from paddleseg.models.layers import NMF2D

    from segkit.models.segnext import NMF

    args = {key.replace("nmf_", ""): value for key, value in nmf_args(ham_kwargs).items()}
    theirs, ours = NMF2D(dict(ham_kwargs)), NMF(**args, channels=32)
    ours.seed_eval_bases(None)  # upstream's per-call draw
    theirs.eval()
    ours.eval()
    x = paddle.to_tensor(np.random.default_rng(0).uniform(size=(2, 32, 5, 7)).astype("float32"))
    outs = []
    for layer in (theirs, ours):
        paddle.seed(13)
        outs.append(layer(x).numpy())
    np.testing.assert_allclose(outs[1], outs[0], rtol=1e-5, atol=1e-6)


def test_upstream_random_eval_bases_follow_paddle_seed(tiny_pair):
    _, ours = tiny_pair
    ours.eval()
    x = np.random.default_rng(0).normal(size=(1, 3, 64, 64)).astype("float32")
    first, again, other = run(ours, x, 7), run(ours, x, 7), run(ours, x, 8)
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).max() > 1e-4, "NMF bases should be random: another seed must change the output"


def test_fixed_eval_bases_are_the_seeded_numpy_draw():
    """The documented recipe: NumPy default_rng(seed).random((groups, D, rank)), L2-normalised over D."""
    from segkit.models.segnext import NMF

    nmf = NMF(rank=4, groups=2, channels=16)
    nmf.eval()
    nmf.seed_eval_bases(9)
    expected = np.random.default_rng(9).random((2, 8, 4), dtype=np.float32)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(nmf.eval_bases.numpy(), expected, rtol=1e-6)
    assert "eval_bases" not in nmf.state_dict()  # checkpoints stay PaddleSeg's


def test_nmf_steps_train_6_eval_7(tiny_pair, monkeypatch):
    _, ours = tiny_pair
    nmf = ours.head.ham.nmf
    calls = []
    original = type(nmf)._update_bases
    monkeypatch.setattr(type(nmf), "_update_bases", lambda self, *a: calls.append(1) or original(self, *a))
    x = paddle.rand([1, nmf.rank * 2, 4, 4])
    for training, steps in ((True, 6), (False, 7)):
        calls.clear()
        nmf.train() if training else nmf.eval()
        nmf(x)
        assert len(calls) == steps
    ours.eval()


def test_paddleseg_checkpoint_file_loads_as_pretrained(tiny_pair, tmp_path):
    reference, _ = tiny_pair
    reference.eval()
    path = str(tmp_path / "model.pdparams")
    paddle.save(reference.state_dict(), path)
    ours = Config({"model": {"type": "SegNeXt", "backbone": {"type": "MSCAN_T"}, "num_classes": 19, "pretrained": path,
                             "decoder_cfg": dict(PADDLESEG_HEAD, dropout_rate=0.1, align_corners=False)}}).build_model()
    ours.eval()
    ours.head.ham.nmf.seed_eval_bases(None)  # upstream's per-call draw, to compare with the oracle
    x = np.random.default_rng(1).normal(size=(1, 3, 48, 80)).astype("float32")
    np.testing.assert_allclose(run(ours, x, 3), run(reference, x, 3), rtol=0, atol=1e-4)
    # The same file, loaded for another number of classes: everything but the classifier.
    other = Config({"model": {"type": "segnext_t", "num_classes": 4, "pretrained": path}}).build_model()
    np.testing.assert_array_equal(other.head.squeeze[0].weight.numpy(), ours.head.squeeze[0].weight.numpy())


def test_backbone_pretrained_accepts_paddleseg_keys_and_classifier_head(tiny_pair, tmp_path):
    reference, _ = tiny_pair
    reference.eval()
    state = {k: v.numpy() for k, v in reference.backbone.state_dict().items()}
    state["head.weight"] = np.zeros((256, 1000), "float32")  # ImageNet checkpoints carry a classifier
    path = str(tmp_path / "mscan_t.pdparams")
    paddle.save(state, path)
    backbone = with_pretrained(BACKBONES.get("mscan_t")(), path)
    backbone.eval()
    x = paddle.to_tensor(np.random.default_rng(2).normal(size=(1, 3, 64, 64)).astype("float32"))
    for mine, theirs in zip(backbone(x), reference.backbone(x)):
        np.testing.assert_allclose(mine.numpy(), theirs.numpy(), rtol=0, atol=1e-5)


def test_remap_maps_every_paddleseg_key_and_is_idempotent(base_official_pair):
    reference, ours = base_official_pair
    theirs = {k: v.numpy() for k, v in reference.state_dict().items()}
    mapped = remap_checkpoint_keys(theirs)
    assert set(mapped) == set(ours.state_dict())
    assert remap_checkpoint_keys(mapped).keys() == mapped.keys()
    assert "backbone.stages.2.blocks.11.attn.msca.strips.1.0.weight" in mapped
    assert mapped["head.classifier.weight"] is theirs["decode_head.conv_seg.weight"]
    backbone_only = remap_checkpoint_keys({"block3.11.norm2._mean": 0, "patch_embed1.proj.4.weight": 1, "norm4.bias": 2})
    assert backbone_only == {"stages.2.blocks.11.mlp_norm._mean": 0, "stages.0.embed.4.weight": 1, "stages.3.norm.bias": 2}


# Trainable parameter counts from docs/REFERENCE.md.
@pytest.mark.parametrize("name, classes, expected", [
    ("segnext_t", 150, 4_263_414), ("segnext_t", 19, 4_229_747),
    ("segnext_s", 150, 13_932_886), ("segnext_b", 150, 27_636_310),
    ("segnext_b", 19, 27_569_107), ("segnext_l", 150, 48_926_550),
])
def test_trainable_parameter_counts_official_heads(name, classes, expected):
    assert trainable_count(shapes_only(lambda: MODELS.get(name)(num_classes=classes))) == expected


@pytest.mark.parametrize("size, expected", [("B", 26_760_534), ("L", 45_119_574)])
def test_trainable_parameter_counts_paddleseg_yml_heads(size, expected):
    assert trainable_count(shapes_only(lambda: segnext(size, PADDLESEG_HEAD, 150))) == expected


def test_optimizer_groups_match_paddleseg_names(tiny_pair):
    """The recipe's custom_cfg (head lr x10, no decay on norms) selects the same parameters as in PaddleSeg."""
    reference, ours = tiny_pair

    def groups(model):
        sizes = [0, 0, 0]
        for name, p in model.named_parameters():
            index = 0 if "head" in name else 1 if "norm" in name else 2
            sizes[index] += int(np.prod(p.shape))
        return sizes

    assert groups(ours) == groups(reference)


def test_config_errors_name_the_key():
    def model(**section):
        return Config({"model": {"type": "SegNeXt", "backbone": {"type": "MSCAN_T"}, "num_classes": 19, **section}})

    with pytest.raises(ConfigError, match="model.decoder_cfg.chanels: .*'channels'"):
        model(decoder_cfg={"chanels": 256})
    with pytest.raises(ConfigError, match="model.decoder_cfg.ham_kwargs.INV_T is fixed to 1"):
        model(decoder_cfg={"ham_kwargs": {"INV_T": 100}})
    with pytest.raises(ConfigError, match="model.decoder_cfg.ham_kwargs.MD_X: unknown key"):
        model(decoder_cfg={"ham_kwargs": {"MD_X": 1}})
    with pytest.raises(ConfigError, match="model.nmf_rank: set twice"):
        model(decoder_cfg={"ham_kwargs": {"MD_R": 8}}, nmf_rank=16)
    with pytest.raises(ConfigError, match="model: backbone_indices"):
        model(decoder_cfg=PADDLESEG_HEAD, backbone_indices=[1, 2, 4]).build_model()
    with pytest.raises(ConfigError, match="model: ham_channels 100 is not divisible by nmf_groups 3"):
        model(ham_channels=100, num_groups=4, nmf_groups=3).build_model()
    with pytest.raises(ConfigError, match="model.nmf_rank: SegNeXt.nmf_rank expects an integer"):
        model(nmf_rank="16")


# PaddleSeg 2.8's configs/segnext/segnext_mscan_t_cityscapes_1024x1024_160k.yml with the custom_cfg of its
# S/B/L siblings, verbatim apart from that.
PADDLESEG_YML = """\
_base_: '../_base_/cityscapes.yml'

batch_size: 2
iters: 160000

train_dataset:
  transforms:
    - type: ResizeStepScaling
      min_scale_factor: 0.5
      max_scale_factor: 2.0
      scale_step_size: 0.25
    - type: RandomPaddingCrop
      crop_size: [1024, 1024]
      category_max_ratio: 0.75
    - type: RandomHorizontalFlip
    - type: RandomDistort
    - type: Normalize
      mean: [0.485, 0.456, 0.406]
      std: [0.229, 0.224, 0.225]

val_dataset:
  transforms:
    - type: Normalize
      mean: [0.485, 0.456, 0.406]
      std: [0.229, 0.224, 0.225]

optimizer:
  _inherited_: False
  type: AdamW
  weight_decay: 0.01
  custom_cfg:
    - name: head
      lr_mult: 10.0
    - name: norm
      weight_decay_mult: 0.0

loss:
  types:
    - type: CrossEntropyLoss
  coef: [1]

lr_scheduler:
  type: PolynomialDecay
  warmup_iters: 1500
  warmup_start_lr: 1.0e-6
  learning_rate: 0.00006
  end_lr: 0.0
  power: 1.0

model:
  type: SegNeXt
  backbone:
    type: MSCAN_T
    pretrained: https://paddleseg.bj.bcebos.com/dygraph/backbone/mscan_t_imagenet_pretrained.zip
  num_classes: 19
  decoder_cfg:
    channels: 256
    ham_channels: 256
    ham_kwargs:
      MD_R: 16
    dropout_rate: 0.1
    align_corners: False
"""


def test_paddleseg_yaml_runs_unchanged(tmp_path):
    import shutil

    from segkit.config import load_config

    (tmp_path / "_base_").mkdir()
    (tmp_path / "segnext").mkdir()
    shutil.copy(ROOT / "configs/_base_/cityscapes.yml", tmp_path / "_base_" / "cityscapes.yml")
    (tmp_path / "segnext" / "t.yml").write_text(PADDLESEG_YML)
    # Offline: no backbone download; a short run needs a shorter warmup.
    cfg = load_config(str(tmp_path / "segnext" / "t.yml"),
                      ["model.backbone.pretrained=null", "iters=30", "lr_scheduler.warmup_iters=5"])
    model = cfg.build_model()
    optimizer = cfg.build_optimizer(model, cfg.build_lr_scheduler())
    groups = [(g["learning_rate"], g["weight_decay"], sum(int(np.prod(p.shape)) for p in g["params"]))
              for g in optimizer._param_groups]
    head = sum(int(np.prod(p.shape)) for p in model.head.parameters())
    assert groups[0] == (10.0, 0.01, head)
    assert groups[1][:2] == (1.0, 0.0) and groups[2][:2] == (1.0, 0.01)
    assert sum(g[2] for g in groups) == 4_229_747


def test_shipped_configs_load():
    import glob

    from segkit.config import load_config

    paths = sorted(glob.glob(str(ROOT / "configs/segnext/*.yml")))
    assert len(paths) == 17  # four sizes x four datasets + the embedded-dataset smoke test
    widths = {"t": 256, "s": 256, "b": 512, "l": 1024}
    for path in paths:
        cfg = load_config(path)
        size = Path(path).name.split("_")[1]
        assert cfg.data["model"]["backbone"]["type"] == f"mscan_{size}"
        assert cfg.data["model"]["decoder_channels"] == widths[size]
