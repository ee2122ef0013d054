"""Optimizers and learning-rate schedules, configured as in PaddleSeg.

An optimizer entry in the config builds a factory; the trainer calls it with the model and the
schedule. ``custom_cfg`` gives parameter groups by name: every parameter whose name contains
``name`` gets ``lr_mult`` times the learning rate and ``weight_decay_mult`` times the weight decay
(the first matching entry wins), which is how the SegFormer / SegNeXt / HRViT recipes give the head
10x the learning rate and take norms and position embeddings out of weight decay.
"""

from typing import Dict, List, Optional

import paddle
from paddle import nn

from segkit.errors import ConfigError
from segkit.registry import LR_SCHEDULERS, OPTIMIZERS, did_you_mean

GRAD_CLIPS = {
    "ClipGradByGlobalNorm": (paddle.nn.ClipGradByGlobalNorm, "clip_norm"),
    "ClipGradByNorm": (paddle.nn.ClipGradByNorm, "clip_norm"),
    "ClipGradByValue": (paddle.nn.ClipGradByValue, "max"),
}


def build_grad_clip(cfg: Optional[Dict]):
    """``{name: ClipGradByGlobalNorm, clip_norm: 1.0}`` -> a Paddle gradient clip, or None."""
    if not cfg:
        return None
    name = cfg.get("name")
    if name not in GRAD_CLIPS:
        raise ConfigError(
            f"optimizer.grad_clip_cfg.name: unknown clip {name!r}.{did_you_mean(str(name), GRAD_CLIPS)} "
            f"Valid: {', '.join(GRAD_CLIPS)}.",
            key="optimizer.grad_clip_cfg.name",
        )
    cls, arg = GRAD_CLIPS[name]
    extra = set(cfg) - {"name", arg}
    if extra or arg not in cfg:
        raise ConfigError(f"optimizer.grad_clip_cfg: {name} takes exactly name and {arg}, got {sorted(cfg)}.", key="optimizer.grad_clip_cfg")
    return cls(cfg[arg])


class OptimizerFactory:
    """Common part of the optimizer entries: weight decay, parameter groups and gradient clipping.

    Args:
        weight_decay: decay coefficient for every parameter not given another by ``custom_cfg``.
        custom_cfg: list of ``{name, lr_mult, weight_decay_mult}`` parameter-group rules.
        grad_clip_cfg: ``{name: ClipGradByGlobalNorm, clip_norm: ...}`` or similar.
    """

    def __init__(self, weight_decay: Optional[float] = None, custom_cfg: Optional[List[Dict]] = None, grad_clip_cfg: Optional[Dict] = None):
        self.weight_decay = weight_decay
        self.custom_cfg = custom_cfg or []
        for i, rule in enumerate(self.custom_cfg):
            unknown = set(rule) - {"name", "lr_mult", "weight_decay_mult"}
            if "name" not in rule or unknown:
                raise ConfigError(
                    f"optimizer.custom_cfg.{i}: each rule needs 'name' and may have lr_mult and "
                    f"weight_decay_mult; got {sorted(rule)}.",
                    key=f"optimizer.custom_cfg.{i}",
                )
        self.grad_clip = build_grad_clip(grad_clip_cfg)

    def param_groups(self, model: nn.Layer) -> List[Dict]:
        """Split the trainable parameters into groups by ``custom_cfg``; the default group comes last."""
        groups = [[] for _ in range(len(self.custom_cfg) + 1)]
        for name, param in model.named_parameters():
            if param.stop_gradient:
                continue
            index = next((i for i, rule in enumerate(self.custom_cfg) if rule["name"] in name), len(self.custom_cfg))
            groups[index].append(param)
        base_decay = self.weight_decay or 0.0
        result = []
        for rule, params in zip(self.custom_cfg + [{}], groups):
            if params:
                group = {"params": params, "learning_rate": float(rule.get("lr_mult", 1.0))}
                group["weight_decay"] = base_decay * float(rule.get("weight_decay_mult", 1.0))
                result.append(group)
        return result

    def create(self, params, lr) -> paddle.optimizer.Optimizer:
        """Build the Paddle optimizer (implemented by each entry)."""
        raise NotImplementedError

    def __call__(self, model: nn.Layer, lr) -> paddle.optimizer.Optimizer:
        groups = self.param_groups(model)
        params = groups if self.custom_cfg else groups[0]["params"] if groups else []
        return self.create(params, lr)


@OPTIMIZERS.register
class SGD(OptimizerFactory):
    """Plain SGD (``weight_decay`` is L2)."""

    def create(self, params, lr):
        return paddle.optimizer.SGD(lr, parameters=params, weight_decay=self.weight_decay, grad_clip=self.grad_clip)


@OPTIMIZERS.register
class Momentum(OptimizerFactory):
    """SGD with momentum (``weight_decay`` is L2).

    Args:
        momentum: momentum factor.
        use_nesterov: Nesterov momentum.
    """

    def __init__(self, momentum: float = 0.9, use_nesterov: bool = False, weight_decay: Optional[float] = None,
                 custom_cfg: Optional[List[Dict]] = None, grad_clip_cfg: Optional[Dict] = None):
        super().__init__(weight_decay, custom_cfg, grad_clip_cfg)
        self.momentum = momentum
        self.use_nesterov = use_nesterov

    def create(self, params, lr):
        return paddle.optimizer.Momentum(lr, momentum=self.momentum, parameters=params, use_nesterov=self.use_nesterov,
                                         weight_decay=self.weight_decay, grad_clip=self.grad_clip)


@OPTIMIZERS.register
class AdamW(OptimizerFactory):
    """AdamW (decoupled weight decay).

    Args:
        beta1: first-moment decay.
        beta2: second-moment decay.
        epsilon: numerical stabiliser.
        weight_decay: decoupled decay coefficient (PaddleSeg's default 0.01).
    """

    def __init__(self, beta1: float = 0.9, beta2: float = 0.999, epsilon: float = 1e-8, weight_decay: float = 0.01,
                 custom_cfg: Optional[List[Dict]] = None, grad_clip_cfg: Optional[Dict] = None):
        super().__init__(weight_decay, custom_cfg, grad_clip_cfg)
        self.beta1, self.beta2, self.epsilon = beta1, beta2, epsilon

    def create(self, params, lr):
        return paddle.optimizer.AdamW(lr, beta1=self.beta1, beta2=self.beta2, epsilon=self.epsilon, parameters=params,
                                      weight_decay=self.weight_decay, grad_clip=self.grad_clip)


@OPTIMIZERS.register
class Adam(AdamW):
    """Adam with L2 weight decay (coupled), as ``paddle.optimizer.Adam``."""

    def __init__(self, beta1: float = 0.9, beta2: float = 0.999, epsilon: float = 1e-8, weight_decay: Optional[float] = None,
                 custom_cfg: Optional[List[Dict]] = None, grad_clip_cfg: Optional[Dict] = None):
        super().__init__(beta1, beta2, epsilon, weight_decay or 0.0, custom_cfg, grad_clip_cfg)

    def create(self, params, lr):
        return paddle.optimizer.Adam(lr, beta1=self.beta1, beta2=self.beta2, epsilon=self.epsilon, parameters=params,
                                     weight_decay=self.weight_decay or None, grad_clip=self.grad_clip)


@LR_SCHEDULERS.register
def PolynomialDecay(
    learning_rate: float,
    iters: int,
    end_lr: float = 0.0,
    power: float = 0.9,
    warmup_iters: int = 0,
    warmup_start_lr: float = 0.0,
    decay_steps: Optional[int] = None,
    cycle: bool = False,
) -> paddle.optimizer.lr.LRScheduler:
    """Polynomial decay from ``learning_rate`` to ``end_lr``, after an optional linear warmup.

    Args:
        learning_rate: the peak learning rate.
        iters: total training iterations (filled from the config's ``iters``).
        end_lr: the rate at the end of the decay.
        power: the polynomial's exponent (1 = linear).
        warmup_iters: iterations of linear warmup from ``warmup_start_lr`` to ``learning_rate``.
        warmup_start_lr: the rate at iteration 0 when warming up.
        decay_steps: length of the decay; default ``iters - warmup_iters`` as in PaddleSeg.
        cycle: restart the decay after ``decay_steps``.
    """
    steps = decay_steps if decay_steps is not None else iters - warmup_iters
    if steps <= 0:
        raise ConfigError(
            f"lr_scheduler: warmup_iters ({warmup_iters}) must be smaller than iters ({iters}).",
            key="lr_scheduler.warmup_iters",
        )
    decay = paddle.optimizer.lr.PolynomialDecay(learning_rate, steps, end_lr=end_lr, power=power, cycle=cycle)
    if warmup_iters <= 0:
        return decay
    return paddle.optimizer.lr.LinearWarmup(decay, warmup_iters, warmup_start_lr, learning_rate)
