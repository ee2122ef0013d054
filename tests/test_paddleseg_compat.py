"""PaddleSeg habits: SGD with momentum, any paddle.optimizer.lr schedule with PaddleSeg's warmup."""

import copy
from types import SimpleNamespace

import numpy as np
import paddle
import pytest
from paddleseg.cvlibs.builder import SegBuilder

from segkit.config import Config
from segkit.errors import ConfigError
from segkit.optim import build_lr_scheduler

# ----------------------------------------------------------------------------------------------
# optimizer: SGD with momentum is Momentum, as PaddleSeg's builder makes it
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spelling", ["SGD", "sgd"])
def test_sgd_with_momentum_builds_paddle_momentum(spelling):
    section = {"type": spelling, "momentum": 0.8, "weight_decay": 4.0e-5}
    cfg = Config({"optimizer": section, "iters": 10})
    assert cfg.data["optimizer"]["type"] == "Momentum"
    model = paddle.nn.Linear(2, 2)
    optimizer = cfg.build_optimizer(model, 0.1)
    assert isinstance(optimizer, paddle.optimizer.Momentum) and optimizer._momentum == 0.8


def test_sgd_without_momentum_stays_sgd():
    cfg = Config({"optimizer": {"type": "sgd"}})
    optimizer = cfg.build_optimizer(paddle.nn.Linear(2, 2), 0.1)
    assert type(optimizer) is paddle.optimizer.SGD


# ----------------------------------------------------------------------------------------------
# Type names: PaddleSeg's backbone names are aliases of segkit's one scheme
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alias, name", [("MixVisionTransformer_B0", "mit_b0"), ("MSCAN_T", "mscan_t"),
                                         ("HRViT_b1", "hrvit_b1")])
def test_backbone_aliases_resolve_to_the_registered_name(alias, name):
    from segkit.registry import BACKBONES

    model = {"type": "SegFormer", "num_classes": 3, "embedding_dim": 8, "backbone": {"type": alias}}
    cfg = Config({"model": model})
    assert cfg.data["model"]["backbone"]["type"] == name  # the resolved config.yml shows segkit's name
    assert alias not in BACKBONES  # aliases live in the translation layer only


def test_convert_weights_takes_backbone_names_and_aliases():
    from convert_weights import build_layer

    from segkit.models.hrvit import HRViT, HRViTSegFormer

    assert isinstance(build_layer("hrvit_b1", 3), HRViTSegFormer)  # --model: the model of that name
    assert isinstance(build_layer("hrvit_b1", None, backbone=True), HRViT)  # --backbone
    assert isinstance(build_layer("HRViT_b1", None), HRViT)  # --model with the earlier backbone name


def test_unknown_backbone_name_lists_the_registered_ones():
    with pytest.raises(ConfigError, match="model.backbone.type: unknown backbones type 'mit_b9'. Did you mean 'mit_b"):
        Config({"model": {"type": "SegFormer", "embedding_dim": 8, "backbone": {"type": "mit_b9"}}})


# ----------------------------------------------------------------------------------------------
# lr_scheduler: values at every iteration against PaddleSeg 2.8's SegBuilder.lr_scheduler
# ----------------------------------------------------------------------------------------------


def paddleseg_schedule(section, iters):
    """PaddleSeg 2.8's own builder code, run on a stand-in holding only what it reads."""
    stub = SimpleNamespace(config=SimpleNamespace(lr_scheduler_cfg=copy.deepcopy(section), iters=iters))
    return SegBuilder.lr_scheduler.func(stub)


def rates(schedule, count):
    values = []
    for _ in range(count):
        values.append(schedule.get_lr())
        schedule.step()
    return np.array(values)


SCHEDULES = {
    "poly+warmup": ({"type": "PolynomialDecay", "learning_rate": 0.01, "end_lr": 0, "power": 0.9,
                     "warmup_iters": 20, "warmup_start_lr": 1.0e-4}, 100),
    "poly, paddle defaults": ({"type": "PolynomialDecay", "learning_rate": 6.0e-5, "power": 1}, 50),
    "cosine+warmup": ({"type": "CosineAnnealingDecay", "learning_rate": 0.02, "T_max": 80,
                       "warmup_iters": 20, "warmup_start_lr": 0.0}, 100),
    "piecewise": ({"type": "PiecewiseDecay", "boundaries": [30, 60], "values": [0.1, 0.01, 0.001]}, 100),
    "one-cycle": ({"type": "OneCycleLR", "max_learning_rate": 0.1, "total_steps": 100}, 100),
    "step+warmup": ({"type": "StepDecay", "learning_rate": 0.1, "step_size": 25, "gamma": 0.5,
                     "warmup_iters": 10, "warmup_start_lr": 0.01}, 100),
    "warmup longer than training": ({"type": "PolynomialDecay", "learning_rate": 0.01, "end_lr": 0, "power": 0.9,
                                     "warmup_iters": 1500, "warmup_start_lr": 1.0e-6}, 10),
}


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_schedule_values_match_paddleseg(name):
    section, iters = SCHEDULES[name]
    ours = build_lr_scheduler(copy.deepcopy(section), iters)
    np.testing.assert_allclose(rates(ours, iters), rates(paddleseg_schedule(section, iters), iters), rtol=1e-12)


def test_warmup_longer_than_training_warns_in_one_line(capsys):
    section, iters = SCHEDULES["warmup longer than training"]
    build_lr_scheduler(section, iters)
    lines = [line for line in capsys.readouterr().out.splitlines() if "WARNING" in line]
    assert len(lines) == 1 and "warmup_iters (1500) >= iters (10)" in lines[0]


@pytest.mark.parametrize("section, message", [
    ({"type": "ReduceOnPlateau", "learning_rate": 0.1}, "steps on a metric"),
    ({"type": "LinearWarmup", "learning_rate": 0.1}, "warmup_iters and warmup_start_lr"),
    ({"type": "CosineAnnealing", "learning_rate": 0.1}, "CosineAnnealingDecay"),
    ({"type": "CosineAnnealingDecay", "learning_rate": 0.1}, "missing required key.*T_max"),
    ({"type": "PolynomialDecay", "learning_rate": 0.1, "powr": 1}, "Did you mean 'power'"),
    ({"type": "OneCycleLR", "max_learning_rate": 0.1, "total_steps": 9, "warmup_iters": 2}, "warmup ends at learning_rate"),
])
def test_bad_schedules_are_named_at_load_time(section, message):
    with pytest.raises(ConfigError, match=message):
        Config({"lr_scheduler": section, "iters": 10})
