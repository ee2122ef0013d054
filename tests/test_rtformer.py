"""RTFormer: parity with paddleseg==2.8.0 (the oracle), checkpoint key remap, pretrained loading."""

import glob
import os
import shutil
import zipfile

import numpy as np
import paddle
import pytest

from helpers import KERNELS, kernels, randomise_state, shapes_only, trainable_count, with_pretrained
from segkit.weights import load_weights, read_state_dict
from segkit.errors import CheckpointError, ConfigError
from segkit.models.rtformer import RTFormer, remap_rtformer_key, rtformer_base, rtformer_slim
from segkit.registry import MODELS, build
from paddleseg.models import rtformer as paddleseg_rtformer  # the oracle (test-only dependency)

SLIM = dict(base_channels=32, head_channels=64)
BASE = dict(base_channels=64, head_channels=128, use_injection=[True, False])


def _trained_like(name, tensor, rng):
    """BatchNorm statistics and affine parameters far from their defaults; the rest rescaled."""
    shape = tensor.shape
    if name.endswith("_variance"):
        return rng.uniform(0.5, 2.0, shape)
    if name.endswith("_mean"):
        return rng.normal(0.0, 0.3, shape)
    if tensor.ndim == 1:  # norm weights / biases, conv biases
        return rng.normal(1.0 if name.endswith("weight") and "conv" not in name else 0.0, 0.2, shape)
    return tensor.numpy() * rng.uniform(0.8, 1.2, shape)  # conv weights, attention memories: upstream's scale


def randomise_like_trained(model: paddle.nn.Layer, seed: int) -> None:
    """Give every BatchNorm non-trivial statistics and affine parameters, and rescale the rest."""
    randomise_state(model, seed, _trained_like)


def oracle_and_segkit(tmp_path, seed: int = 0, **kwargs):
    """A randomised PaddleSeg RTFormer and a segkit RTFormer loaded from its saved checkpoint."""
    kwargs.setdefault("num_classes", 19)
    kwargs.setdefault("drop_path_rate", 0.0)
    paddle.seed(seed)
    oracle = paddleseg_rtformer.RTFormer(**kwargs)
    randomise_like_trained(oracle, seed)
    path = str(tmp_path / "model.pdparams")
    paddle.save(oracle.state_dict(), path)
    ours = RTFormer(**kwargs)
    load_weights(ours, read_state_dict(path), source=path)  # remapped by RTFormer.remap_checkpoint_keys
    return oracle, ours


def max_diff(a: paddle.Tensor, b: paddle.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((a - b).abs().max())


@pytest.mark.parametrize(
    "variant, shapes",
    [
        (dict(SLIM), [(1, 64, 128), (2, 70, 110)]),
        (dict(SLIM, cross_size=8, use_injection=[True, False]), [(2, 96, 160)]),
        (dict(BASE), [(1, 70, 110), (2, 64, 96)]),
    ],
    ids=["slim", "slim-ade20k", "base"],
)
@pytest.mark.parametrize("kernel", KERNELS)
def test_logits_match_paddleseg_in_eval_and_training(tmp_path, variant, shapes, kernel):
    oracle, ours = oracle_and_segkit(tmp_path, seed=len(shapes), **variant)
    rng = np.random.default_rng(1)
    for batch, height, width in shapes:
        x = paddle.to_tensor(rng.normal(size=(batch, 3, height, width)).astype("float32"))
        oracle.eval(), ours.eval()
        with kernels(kernel):
            expected, got = oracle(x)[0], ours(x)
        assert got.shape == [batch, 19, height, width]
        scale = float(expected.abs().max())
        assert scale > 1.0  # the comparison is not between near-zero maps
        assert max_diff(expected, got) <= (1e-4 if kernel == "paddle" else 5e-5 * scale)

        oracle.train(), ours.train()
        with kernels(kernel):
            expected, got = oracle(x), ours(x)
        assert len(got) == 2 == ours.num_outputs
        for e, g in zip(expected, got):
            assert max_diff(e, g) <= (1e-4 if kernel == "paddle" else 5e-5 * float(e.abs().max()))


@pytest.mark.parametrize("kernel", KERNELS)
def test_training_updates_running_stats_and_gradients_like_paddleseg(tmp_path, kernel):
    oracle, ours = oracle_and_segkit(tmp_path, seed=3, **SLIM)
    x = paddle.to_tensor(np.random.default_rng(2).normal(size=(2, 3, 64, 96)).astype("float32"))
    oracle.train(), ours.train()
    for model in (oracle, ours):
        with kernels(kernel):
            main, aux = model(x)
            (main.square().mean() + aux.mean()).backward()

    own_state = ours.state_dict()
    stats_atol = 1e-5 if kernel == "paddle" else 1e-4  # a batch mean of a conv output sums in another order
    for name, tensor in oracle.state_dict().items():  # BN momentum 0.1: running stats after one step
        np.testing.assert_allclose(own_state[remap_rtformer_key(name)].numpy(), tensor.numpy(), rtol=1e-4,
                                   atol=stats_atol)
    own_params = dict(ours.named_parameters())
    trained = [(name, param) for name, param in oracle.named_parameters() if not param.stop_gradient]
    # Biases before a BatchNorm have gradients of pure rounding noise (the norm removes the mean): on
    # oneDNN, whose noise differs, they are compared on the scale of the model's largest gradient.
    floor = 1e-8 if kernel == "paddle" else 1e-3 * max(float(np.abs(p.grad.numpy()).max()) for _, p in trained)
    for name, param in trained:
        mine = own_params[remap_rtformer_key(name)]
        scale = max(float(np.abs(param.grad.numpy()).max()), floor)
        # Rounding differences grow through the training-mode BatchNorms' batch statistics of this small
        # random net: against a float64 run, float32 gradients on Paddle's kernels are off by 5.5e-4
        # (median over parameters), on oneDNN by 2.3e-3, up to 1.7e-2 (head.proj, whose Paddle figure is
        # 4e-5)
        rtol = 1e-3 if kernel == "paddle" else 2e-2
        assert float(np.abs(mine.grad.numpy() - param.grad.numpy()).max()) <= rtol * scale, name
        # learning-rate multipliers (lr_mult 10 on DAPPM and heads) as upstream
        assert mine.optimize_attr["learning_rate"] == param.optimize_attr["learning_rate"], name


def test_remap_covers_every_paddleseg_key_and_is_idempotent():
    oracle = paddleseg_rtformer.RTFormer(num_classes=7, **SLIM)
    ours = rtformer_slim(num_classes=7)
    upstream = {k: v.numpy() for k, v in oracle.state_dict().items()}
    remapped = RTFormer.remap_checkpoint_keys(upstream)
    own = ours.state_dict()
    assert sorted(remapped) == sorted(own)
    assert all(tuple(remapped[k].shape) == tuple(own[k].shape) for k in own)
    again = RTFormer.remap_checkpoint_keys(remapped)
    assert list(again) == list(remapped)
    assert remap_rtformer_key("last_layer.0.weight") == "last_layer.0.weight"  # unknown keys pass
    assert remap_rtformer_key("layer3_.0.bn1._mean") == "stage3_high.0.norm1._mean"
    assert remap_rtformer_key("spp.process4.2.weight") == "dappm.refine.3.conv.weight"


def test_paddleseg_checkpoint_without_aux_head_loads(tmp_path):
    oracle, ours = oracle_and_segkit(tmp_path, num_classes=5, use_aux_head=False, **SLIM)
    assert ours.aux_head is None and ours.num_outputs == 1
    ours.train()
    out = ours(paddle.rand([1, 3, 64, 64]))
    assert isinstance(out, list) and len(out) == 1


# Trainable parameter counts from docs/REFERENCE.md.
@pytest.mark.parametrize(
    "factory, num_classes, expected",
    [
        (rtformer_slim, 19, 5_403_398),
        (rtformer_slim, 150, 5_428_812),
        (rtformer_base, 19, 17_916_390),
        (rtformer_base, 150, 17_966_956),
    ],
)
def test_trainable_parameter_counts(factory, num_classes, expected):
    variant = SLIM if factory is rtformer_slim else BASE
    assert trainable_count(shapes_only(lambda: factory(num_classes=num_classes))) == expected
    oracle = shapes_only(lambda: paddleseg_rtformer.RTFormer(num_classes=num_classes, **variant))
    assert trainable_count(oracle) == expected


def test_paddleseg_yaml_model_section_builds():
    section = {"type": "RTFormer", "base_channels": 64, "head_channels": 128, "drop_path_rate": 0.1,
               "use_injection": [True, False]}
    model = build(section, MODELS, "model", num_classes=150)
    assert isinstance(model, RTFormer) and model.block5.inject is None and model.block4.inject is not None
    with pytest.raises(ConfigError, match="head_chanels"):
        build(dict(section, head_chanels=64), MODELS, "model", num_classes=150)
    assert "rtformer_slim" in MODELS and "rtformer_base" in MODELS


def test_num_heads_must_divide_the_memory():
    with pytest.raises(ConfigError, match="groups"):
        RTFormer(num_classes=3, base_channels=12, num_heads=5)


def imagenet_like_checkpoint(oracle) -> dict:
    """What an ImageNet backbone checkpoint holds: the backbone plus a classifier, no DAPPM/heads."""
    state = {k: v.numpy() for k, v in oracle.state_dict().items()
             if not k.startswith(("spp.", "seghead.", "seghead_extra."))}
    state["last_layer.0.weight"] = np.ones([1024, 256, 1, 1], "float32")
    state["classifier.weight"] = np.ones([1024, 1000], "float32")
    return state


def test_pretrained_backbone_from_zip_and_path(tmp_path):
    paddle.seed(5)
    oracle = paddleseg_rtformer.RTFormer(num_classes=19, **SLIM)
    randomise_like_trained(oracle, 5)
    folder = tmp_path / "rtformer_slim_backbone_imagenet_pretrained"
    folder.mkdir()
    paddle.save(imagenet_like_checkpoint(oracle), str(folder / "model.pdparams"))
    archive = str(tmp_path / "pretrained.zip")
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(folder / "model.pdparams", "rtformer_slim_backbone_imagenet_pretrained/model.pdparams")

    for source in (archive, str(folder / "model.pdparams")):
        model = with_pretrained(rtformer_slim(num_classes=7), source)
        own = model.state_dict()
        for name, tensor in oracle.state_dict().items():
            key = remap_rtformer_key(name)
            loaded = np.array_equal(own[key].numpy(), tensor.numpy())
            assert loaded == (not name.startswith(("spp.", "seghead"))), name


def test_pretrained_from_a_segmentation_model_with_other_classes(tmp_path):
    """CamVid fine-tuning starts from PaddleSeg's 19-class Cityscapes model: all but the classifiers load."""
    oracle = paddleseg_rtformer.RTFormer(num_classes=19, **SLIM)
    randomise_like_trained(oracle, 9)
    path = str(tmp_path / "cityscapes.pdparams")
    paddle.save(oracle.state_dict(), path)
    model = with_pretrained(rtformer_slim(num_classes=11), path)
    own = model.state_dict()
    for name, tensor in oracle.state_dict().items():
        loaded = np.array_equal(own[remap_rtformer_key(name)].numpy(), tensor.numpy())
        is_classifier = name.startswith(("seghead.conv2.", "seghead_extra.conv2."))  # 19 classes
        assert loaded == (not is_classifier), name


def test_pretrained_is_strict_about_the_backbone(tmp_path):
    oracle = paddleseg_rtformer.RTFormer(num_classes=19, **SLIM)
    state = imagenet_like_checkpoint(oracle)
    missing = dict(state)
    del missing["layer4.attn_l.k"]
    paddle.save(missing, str(tmp_path / "missing.pdparams"))
    with pytest.raises(CheckpointError, match="block4.low_attn.key"):
        with_pretrained(rtformer_slim(num_classes=7), str(tmp_path / "missing.pdparams"))

    paddle.save(state, str(tmp_path / "base.pdparams"))  # a Slim checkpoint for a Base model
    with pytest.raises(CheckpointError, match="wrong shape"):
        with_pretrained(rtformer_base(num_classes=7), str(tmp_path / "base.pdparams"))


def test_training_returns_main_and_aux_and_eval_returns_main_at_input_size():
    model = rtformer_slim(num_classes=4)
    model.train()
    outs = model(paddle.rand([2, 3, 67, 93]))
    assert [o.shape for o in outs] == [[2, 4, 67, 93]] * 2
    outs[0].mean().backward()  # drop path active (0.2) must not break autograd
    model.eval()
    assert model(paddle.rand([1, 3, 67, 93])).shape == [1, 4, 67, 93]


CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")

# PaddleSeg 2.8's configs/rtformer/rtformer_slim_ade20k_512x512_160k.yml, verbatim.
PADDLESEG_SLIM_ADE20K = """
_base_: '../_base_/ade20k.yml'

batch_size: 4 # total batch size:  4 * 4
iters: 160000

train_dataset:
  transforms:
    - type: ResizeStepScaling
      min_scale_factor: 0.5
      max_scale_factor: 2.0
      scale_step_size: 0.25
    - type: RandomPaddingCrop
      crop_size: [512, 512]
    - type: RandomHorizontalFlip
    - type: RandomDistort
      brightness_range: 0.4
      contrast_range: 0.4
      saturation_range: 0.4
    - type: Normalize
      mean: [0.485, 0.456, 0.406]
      std: [0.229, 0.224, 0.225]

val_dataset:
  transforms:
    - type: Resize
      target_size: [2048, 512]
      keep_ratio: True
      size_divisor: 32
    - type: Normalize
      mean: [0.485, 0.456, 0.406]
      std: [0.229, 0.224, 0.225]

optimizer:
  _inherited_: False
  type: AdamW
  beta1: 0.9
  beta2: 0.999
  weight_decay: 0.05

lr_scheduler:
  _inherited_: False
  type: PolynomialDecay
  learning_rate: 1.0e-4
  power: 1.
  end_lr: 1.0e-7
  warmup_iters: 1500
  warmup_start_lr: 1.0e-6

loss:
  types:
    - type: CrossEntropyLoss
  coef: [1, 0.4]

model:
  type: RTFormer
  base_channels: 32
  head_channels: 64
  drop_path_rate: 0.1
  cross_size: 8
  use_injection: [True, False]
  pretrained: https://paddleseg.bj.bcebos.com/dygraph/backbone/rtformer_slim_backbone_imagenet_pretrained.zip
"""


def learning_rates(model, optimizer):
    """Effective per-parameter multiplier, by segkit name (param groups overwrite ParamAttr rates)."""
    del optimizer  # building it is what writes the group rates into the parameters
    return {name: p.optimize_attr["learning_rate"] for name, p in model.named_parameters() if not p.stop_gradient}


def test_shipped_configs_build_with_the_papers_recipe():
    from segkit.config import load_config

    paths = sorted(glob.glob(os.path.join(CONFIG_DIR, "rtformer", "*.yml")))
    datasets = {os.path.basename(p).split("_")[2] for p in paths}
    assert datasets == {"cityscapes", "camvid", "ade20k", "cocostuff"} and len(paths) == 8
    for path in paths:
        cfg = load_config(path, ["model.pretrained=null"])
        model = shapes_only(cfg.build_model)  # test_configs.py builds and steps each one with its weights
        assert model.num_outputs == 2 == len(cfg.data["loss"]["coef"])
        assert cfg.data["loss"]["coef"] == [1, 0.4] and cfg.data["optimizer"]["type"] == "AdamW"
        assert cfg.data["lr_scheduler"]["warmup_iters"] == 1500
        rates = learning_rates(model, cfg.build_optimizer(model, cfg.build_lr_scheduler()))
        for name, rate in rates.items():  # 10x on DAPPM and heads exactly, as upstream
            assert rate == (10.0 if name.startswith(("dappm.", "head.", "aux_head.")) else 1.0), (path, name)


def test_paddleseg_rtformer_yaml_runs_unchanged(tmp_path):
    from segkit.config import load_config

    shutil.copytree(os.path.join(CONFIG_DIR, "_base_"), tmp_path / "configs" / "_base_")
    (tmp_path / "configs" / "rtformer").mkdir()
    path = tmp_path / "configs" / "rtformer" / "rtformer_slim_ade20k_512x512_160k.yml"
    path.write_text(PADDLESEG_SLIM_ADE20K)
    cfg = load_config(str(path), ["model.pretrained=null", "train_dataset.dataset_root=data/ADEChallengeData2016"])
    model = cfg.build_model()
    assert model.num_classes == 150 and model.block5.inject is None
    assert model.block4.high_attn.num_tokens == 64
    rates = learning_rates(model, cfg.build_optimizer(model, cfg.build_lr_scheduler()))
    assert {r for n, r in rates.items() if n.startswith(("dappm.", "head.", "aux_head."))} == {10.0}
    assert {r for n, r in rates.items() if not n.startswith(("dappm.", "head.", "aux_head."))} == {1.0}
