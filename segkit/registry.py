"""Small, strict registries and the builder that turns config dicts into objects.

Every buildable component (model, backbone, head, dataset, transform, loss, optimizer,
scheduler) is registered under a unique name. ``build`` checks the config keys against the
constructor's signature, so a misspelled key fails at build time with the dotted key and the
closest valid names, instead of being swallowed by ``**kwargs``.
"""

import difflib
import inspect
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

# Registries searched, in order, for a nested ``{type: ...}`` dict inside a component's config.
NESTED_REGISTRIES = (BACKBONES, MODELS, TRANSFORMS, LOSSES)


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
                f"{where}.{key}: unknown key for {getattr(target, '__name__', target)}."
                f"{did_you_mean(key, accepted)} Valid keys: {', '.join(accepted)}.",
                key=f"{where}.{key}",
            )
    missing = [n for n in accepted if params[n].default is inspect.Parameter.empty and n not in kwargs]
    if missing:
        raise ConfigError(f"{where}: missing required key(s) {', '.join(missing)}.", key=where)
    check_values(target, kwargs, where)


def find_registry(type_name: str, where: str) -> Registry:
    """The registry among NESTED_REGISTRIES that holds ``type_name``."""
    for reg in NESTED_REGISTRIES:
        if type_name in reg:
            return reg
    every = [n for reg in NESTED_REGISTRIES for n in reg.names()]
    raise ConfigError(
        f"{where}.type: unknown type {type_name!r}.{did_you_mean(type_name, every)}", key=f"{where}.type"
    )


def _resolve(cfg: Dict[str, Any], registry: Registry, where: str) -> Tuple[Callable, Dict[str, Any]]:
    if not isinstance(cfg, dict) or "type" not in cfg:
        raise ConfigError(f"{where}: expected a mapping with a 'type' key, got {cfg!r}.", key=where)
    target = registry.get(cfg["type"], where=f"{where}.type")
    return target, {k: v for k, v in cfg.items() if k != "type"}


def _is_component(value: Any) -> bool:
    return isinstance(value, dict) and "type" in value


def validate(cfg: Dict[str, Any], registry: Registry, where: str, provided: Iterable[str] = ()) -> None:
    """Check ``cfg`` as ``build`` would, without building anything.

    Types are looked up and keys checked against the constructors, recursively through nested
    components and lists of components (e.g. a dataset's transforms).

    Args:
        cfg: the component's config.
        registry: where ``cfg['type']`` is looked up.
        where: the dotted config key of ``cfg``.
        provided: keys the caller will supply at build time (e.g. ``num_classes``).
    """
    target, kwargs = _resolve(cfg, registry, where)
    for key, value in kwargs.items():
        if _is_component(value):
            validate(value, find_registry(value["type"], f"{where}.{key}"), f"{where}.{key}")
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if _is_component(item):
                    validate(item, find_registry(item["type"], f"{where}.{key}.{i}"), f"{where}.{key}.{i}")
    accepted = inspect.signature(target).parameters
    check_kwargs(target, {**{k: None for k in provided if k in accepted}, **kwargs}, where)


def build(cfg: Dict[str, Any], registry: Registry, where: str, **extra: Any) -> Any:
    """Build the component described by ``cfg`` (a dict with a ``type`` key) from ``registry``.

    Nested dicts that carry a ``type`` key (a backbone inside a model, say) are built first, from
    whichever registry knows their type. ``extra`` arguments are added unless the config sets them
    and only where the constructor accepts them.

    Args:
        cfg: the component's config; not modified.
        registry: where ``cfg['type']`` is looked up.
        where: the dotted config key of ``cfg``, used in error messages.
        extra: defaults supplied by the caller (e.g. ``num_classes`` from the dataset).
    """
    target, kwargs = _resolve(cfg, registry, where)
    for key, value in kwargs.items():
        if _is_component(value):
            kwargs[key] = build(value, find_registry(value["type"], f"{where}.{key}"), f"{where}.{key}")
    accepted = inspect.signature(target).parameters
    for key, value in extra.items():
        if key not in kwargs and key in accepted:
            kwargs[key] = value
    check_kwargs(target, kwargs, where)
    try:
        return target(**kwargs)
    except ConfigError as exc:
        if exc.key:  # already names its key
            raise
        raise ConfigError(f"{where}: {exc}", key=where) from None
