"""Small, strict registries and the builder that turns config dicts into objects.

Every buildable component (model, backbone, dataset, transform, loss, optimizer) is registered
under a unique name. ``build`` checks the config keys against the constructor's signature, so a
misspelled key fails at build time with the dotted key and the closest valid names, instead of
being swallowed by ``**kwargs``. A parameter that takes a nested component declares the registry
its ``type`` comes from in its annotation (``backbone: Annotated[nn.Layer, BACKBONES]``, see
``declared_registry``); ``validate`` and ``build`` walk the same tree (``_walk``), one checking and
the other building.
"""

import difflib
import functools
import inspect
import typing
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from segkit.errors import ConfigError
from segkit.value_checks import check_values


def close_matches(word: str, candidates: Iterable[str], n: int = 3) -> List[str]:
    """Return up to ``n`` candidates that look like ``word`` (case-insensitive)."""
    candidates = list(candidates)
    lowered = {c.lower(): c for c in candidates}
    hits = difflib.get_close_matches(word.lower(), list(lowered), n=n, cutoff=0.5)
    return [lowered[h] for h in hits]


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """A ``did you mean ...?`` suffix for an error message, or an empty string."""
    hits = close_matches(word, candidates)
    return f" Did you mean {', '.join(repr(h) for h in hits)}?" if hits else ""


class Registry:
    """A name -> class/function table for one kind of component.

    Args:
        name: what the registry holds, used in error messages ("models", "transforms").
    """

    def __init__(self, name: str):
        self.name = name
        self._items: Dict[str, Callable] = {}

    def register(self, obj: Optional[Callable] = None, *, name: Optional[str] = None):
        """Register ``obj`` under ``name`` (default: its ``__name__``); usable as a decorator."""

        def add(target: Callable) -> Callable:
            key = name or target.__name__
            if key in self._items:
                raise ValueError(f"{key!r} is already registered in the {self.name} registry")
            self._items[key] = target
            return target

        return add(obj) if obj is not None else add

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def __iter__(self):
        return iter(sorted(self._items))

    def names(self) -> List[str]:
        """All registered names, sorted."""
        return sorted(self._items)

    def get(self, key: str, where: str = "") -> Callable:
        """Look up ``key``; an unknown name raises ConfigError listing the close matches."""
        if key not in self._items:
            at = f"{where}: " if where else ""
            raise ConfigError(
                f"{at}unknown {self.name} type {key!r}.{did_you_mean(key, self._items)} "
                f"Registered {self.name}: {', '.join(self.names())}.",
                key=where,
            )
        return self._items[key]


MODELS = Registry("models")
BACKBONES = Registry("backbones")
DATASETS = Registry("datasets")
TRANSFORMS = Registry("transforms")
LOSSES = Registry("losses")
OPTIMIZERS = Registry("optimizers")


def check_kwargs(target: Callable, kwargs: Dict[str, Any], where: str) -> None:
    """Raise ConfigError if ``kwargs`` holds a key ``target`` does not accept, lacks a required one, or
    holds a value of the wrong type or range (``segkit.value_checks``)."""
    sig = inspect.signature(target)
    params = sig.parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    accepted = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    for key in kwargs:
        if key not in accepted:
            raise ConfigError(
                f"{where}.{key}: unknown key for {_name(target)}."
                f"{did_you_mean(key, accepted)} Valid keys: {', '.join(accepted)}.",
                key=f"{where}.{key}",
            )
    missing = [n for n in accepted if params[n].default is inspect.Parameter.empty and n not in kwargs]
    if missing:
        raise ConfigError(f"{where}: missing required key(s) {', '.join(missing)}.", key=where)
    check_values(target, kwargs, where)


@functools.lru_cache(maxsize=None)
def _annotations(target: Callable) -> Dict[str, Any]:
    """The constructor's annotations with their ``Annotated`` metadata (empty when one cannot be resolved)."""
    try:
        return typing.get_type_hints(target.__init__ if inspect.isclass(target) else target, include_extras=True)
    except Exception:  # an annotation that cannot be resolved: no parameter declares a registry
        return {}


def declared_registry(target: Callable, param: str) -> Optional[Registry]:
    """The registry that ``param`` of ``target`` declares for its ``{type: ...}`` config, or None.

    A parameter declares one with ``typing.Annotated``: ``backbone: Annotated[nn.Layer, BACKBONES]``
    takes one component from BACKBONES, ``transforms: Annotated[List[Callable], TRANSFORMS]`` a list
    of components from TRANSFORMS (``segkit.models.base.Backbone`` and friends name these).
    """
    for meta in getattr(_annotations(target).get(param), "__metadata__", ()):
        if isinstance(meta, Registry):
            return meta
    return None


def _is_component(value: Any) -> bool:
    return isinstance(value, dict) and "type" in value


def _name(target: Callable) -> str:
    return getattr(target, "__name__", str(target))


def _resolve(cfg: Dict[str, Any], registry: Registry, where: str) -> Tuple[Callable, Dict[str, Any]]:
    if not isinstance(cfg, dict) or "type" not in cfg:
        raise ConfigError(f"{where}: expected a mapping with a 'type' key, got {cfg!r}.", key=where)
    target = registry.get(cfg["type"], where=f"{where}.type")
    return target, {k: v for k, v in cfg.items() if k != "type"}


def _nested(target: Callable, kwargs: Dict[str, Any], where: str, construct: bool) -> Dict[str, Any]:
    """``kwargs`` with each component argument checked (and built, with ``construct``) from the
    registry its parameter declares; a list argument item by item."""
    out = dict(kwargs)
    for key, value in kwargs.items():
        registry = declared_registry(target, key)
        if registry is None:
            if _is_component(value):
                raise ConfigError(f"{where}.{key}: {_name(target)}.{key} is a plain value, not a "
                                  f"{{type: ...}} component.", key=f"{where}.{key}")
            continue
        if isinstance(value, (list, tuple)):
            out[key] = [_walk(item, registry, f"{where}.{key}.{i}", {}, construct) for i, item in enumerate(value)]
        elif value is not None:
            out[key] = _walk(value, registry, f"{where}.{key}", {}, construct)
    return out


def _walk(cfg: Any, registry: Registry, where: str, extra: Dict[str, Any], construct: bool) -> Any:
    """Check the component ``cfg`` and everything nested in it; with ``construct`` build it too."""
    if construct and callable(cfg) and not isinstance(cfg, dict):
        return cfg  # built already (a transform object given from Python)
    target, kwargs = _resolve(cfg, registry, where)
    kwargs = _nested(target, kwargs, where, construct)
    accepted = inspect.signature(target).parameters
    kwargs = {**{k: v for k, v in extra.items() if k in accepted}, **kwargs}
    check_kwargs(target, kwargs, where)
    if not construct:
        return cfg
    try:
        return target(**kwargs)
    except ConfigError as exc:
        if exc.key:  # already names its key
            raise
        raise ConfigError(f"{where}: {exc}", key=where) from None


def validate(cfg: Dict[str, Any], registry: Registry, where: str, provided: Iterable[str] = ()) -> None:
    """Check ``cfg`` as ``build`` would, without building anything.

    The same walk as ``build``: types are looked up and keys checked against the constructors,
    recursively through the components (and lists of components) that parameters declare.

    Args:
        cfg: the component's config.
        registry: where ``cfg['type']`` is looked up.
        where: the dotted config key of ``cfg``.
        provided: keys the caller will supply at build time (e.g. ``num_classes``).
    """
    _walk(cfg, registry, where, {key: None for key in provided}, construct=False)


def build(cfg: Dict[str, Any], registry: Registry, where: str, **extra: Any) -> Any:
    """Build the component described by ``cfg`` (a dict with a ``type`` key) from ``registry``.

    Components nested in it (a backbone inside a model, a dataset's transforms) are built first,
    from the registry their parameter declares (``declared_registry``). ``extra`` arguments are
    added unless the config sets them and only where the constructor accepts them.

    Args:
        cfg: the component's config; not modified.
        registry: where ``cfg['type']`` is looked up.
        where: the dotted config key of ``cfg``, used in error messages.
        extra: defaults supplied by the caller (e.g. ``num_classes`` from the dataset).
    """
    return _walk(cfg, registry, where, extra, construct=True)
