"""Optimizers and learning-rate schedules, configured as in PaddleSeg.

An optimizer entry in the config builds a factory; the trainer calls it with the model and the
schedule. ``custom_cfg`` gives parameter groups by name: every parameter whose name contains
``name`` gets ``lr_mult`` times the learning rate and ``weight_decay_mult`` times the weight decay
(the first matching entry wins), which is how the SegFormer / SegNeXt / HRViT recipes give the head
10x the learning rate and take norms and position embeddings out of weight decay.
"""

from typing import Any, Dict, List, Optional

import paddle
from paddle import nn

from segkit.errors import ConfigError
from segkit.logger import logger
from segkit.registry import OPTIMIZERS, check_kwargs, did_you_mean

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


# paddle.optimizer.lr classes a config cannot name, and what to do instead.
UNSUPPORTED_SCHEDULERS = {
    "LRScheduler": "it is the base class; name a concrete schedule",
    "LinearWarmup": "set warmup_iters and warmup_start_lr next to the schedule's own type instead",
    "ReduceOnPlateau": "it steps on a metric, while segkit steps the schedule once per iteration",
    "LambdaDecay": "it needs a Python function, which YAML cannot give",
    "MultiplicativeDecay": "it needs a Python function, which YAML cannot give",
}
WARMUP_KEYS = ("warmup_iters", "warmup_start_lr")


def scheduler_class(name: Any, where: str = "lr_scheduler") -> type:
    """The ``paddle.optimizer.lr`` scheduler class called ``name``, or a ConfigError saying why not."""
    if name in UNSUPPORTED_SCHEDULERS:
        raise ConfigError(f"{where}.type: {name} cannot be used here: {UNSUPPORTED_SCHEDULERS[name]}.",
                          key=f"{where}.type")
    found = getattr(paddle.optimizer.lr, str(name), None)
    if not (isinstance(found, type) and issubclass(found, paddle.optimizer.lr.LRScheduler)):
        names = [n for n in dir(paddle.optimizer.lr) if n not in UNSUPPORTED_SCHEDULERS
                 and isinstance(getattr(paddle.optimizer.lr, n), type)
                 and issubclass(getattr(paddle.optimizer.lr, n), paddle.optimizer.lr.LRScheduler)]
        raise ConfigError(f"{where}.type: {name!r} is not a paddle.optimizer.lr schedule.{did_you_mean(str(name), names)} "
                          f"Valid: {', '.join(names)}.", key=f"{where}.type")
    return found


def check_lr_scheduler(section: Dict[str, Any], where: str = "lr_scheduler") -> None:
    """Check an ``lr_scheduler`` section's type and keys without building it."""
    if "type" not in section:
        raise ConfigError(f"{where}: expected a 'type', e.g. type: PolynomialDecay.", key=where)
    cls = scheduler_class(section["type"], where)
    args = {k: v for k, v in section.items() if k != "type" and k not in WARMUP_KEYS}
    if cls is paddle.optimizer.lr.PolynomialDecay:
        args.setdefault("decay_steps", 1)  # filled from iters
    check_kwargs(cls, args, where)
    if section.get("warmup_iters", 0) and "learning_rate" not in args:
        raise ConfigError(f"{where}: warmup ends at learning_rate, which {cls.__name__} does not take; "
                          "drop warmup_iters or use a schedule with learning_rate.", key=f"{where}.warmup_iters")


def build_lr_scheduler(section: Dict[str, Any], iters: int, where: str = "lr_scheduler") -> paddle.optimizer.lr.LRScheduler:
    """Build the ``lr_scheduler`` section as PaddleSeg 2.8 does (``SegBuilder.lr_scheduler``).

    ``type`` is any ``paddle.optimizer.lr`` schedule, with that class's own arguments and defaults.
    ``PolynomialDecay`` gets ``decay_steps = max(iters - warmup_iters, 1)`` unless given. With
    ``warmup_iters`` > 0 the schedule is wrapped in ``LinearWarmup`` from ``warmup_start_lr``
    (default 0) to ``learning_rate``. ``warmup_iters >= iters`` runs as in PaddleSeg, with a warning.

    Args:
        section: the config's ``lr_scheduler`` section.
        iters: the total training iterations.
        where: the section's dotted key, for messages.
    """
    check_lr_scheduler(section, where)
    cls = scheduler_class(section["type"], where)
    args = {k: v for k, v in section.items() if k != "type" and k not in WARMUP_KEYS}
    warmup_iters = int(section.get("warmup_iters", 0))
    if cls is paddle.optimizer.lr.PolynomialDecay:
        args.setdefault("decay_steps", max(iters - warmup_iters, 1))
    if warmup_iters >= iters:
        logger.warning(f"{where}.warmup_iters ({warmup_iters}) >= iters ({iters}): training ends during the warmup, "
                       f"so the learning rate never reaches {args.get('learning_rate')}.")
    try:
        schedule = cls(**args)
    except (TypeError, ValueError, AssertionError) as exc:
        raise ConfigError(f"{where}: {cls.__name__} rejected its arguments {args}: {exc}", key=where) from None
    if warmup_iters <= 0:
        return schedule
    return paddle.optimizer.lr.LinearWarmup(schedule, warmup_iters, float(section.get("warmup_start_lr", 0.0)),
                                            float(args["learning_rate"]))
