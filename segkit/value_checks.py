"""Config values checked when the config is loaded, not when a layer first trips over them.

Two checks run on every component's keyword arguments (``segkit.registry.check_kwargs``):

* **Types**, from the constructor's annotations: ``num_classes: int`` refuses ``"19"``, ``2.5`` and
  ``true``; ``float`` takes integers too; ``Optional``, unions, lists and tuples are followed. A
  string where a number belongs gets a hint, since YAML reads ``1e-4`` (no dot) as text.
* **Ranges** of well-known keys, whatever the component: a class count, a crop or target size, a
  learning rate must be positive; a probability lies in [0, 1].

Arguments without an annotation, and ``{type: ...}`` components (built later), are not checked here.
"""

import collections.abc
import inspect
import types
import typing
from typing import Any, Callable, Dict, Tuple

from segkit.errors import ConfigError

_SEQUENCES = (list, tuple, collections.abc.Sequence, collections.abc.Iterable)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def matches(value: Any, annotation: Any) -> bool:
    """Whether a config value fits a type annotation (unknown annotations always fit)."""
    if annotation in (inspect.Parameter.empty, Any):
        return True
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(matches(value, a) for a in args)
    if annotation is type(None):
        return value is None
    simple = {bool: lambda v: isinstance(v, bool), int: lambda v: isinstance(v, int) and not isinstance(v, bool),
              float: _is_number, str: lambda v: isinstance(v, str)}
    if annotation in simple:
        return simple[annotation](value)
    if annotation in (list, tuple) or origin in _SEQUENCES:
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(matches(v, a) for v, a in zip(value, args))
        return all(matches(v, args[0]) for v in value) if args else True
    if annotation is dict or origin in (dict, collections.abc.Mapping):
        return isinstance(value, dict)
    return True  # layers, callables and other classes: not something a YAML scalar is checked against


def _all_numbers(value: Any, test: Callable[[float], bool]) -> bool:
    items = value if isinstance(value, (list, tuple)) else [value]
    return all(_is_number(v) and test(v) for v in items)


# key -> (test on each number, what is expected)
RANGES: Dict[str, Tuple[Callable[[float], bool], str]] = {
    "num_classes": (lambda v: v >= 1, "a positive number of classes"),
    "crop_size": (lambda v: v >= 1, "positive sizes in pixels"),
    "target_size": (lambda v: v >= 1, "positive sizes in pixels"),
    "learning_rate": (lambda v: v > 0, "a positive learning rate"),
    "prob": (lambda v: 0 <= v <= 1, "a probability in [0, 1]"),
}


def _type_hints(target: Callable) -> Dict[str, Any]:
    try:
        return typing.get_type_hints(target.__init__ if inspect.isclass(target) else target)
    except Exception:  # an annotation that cannot be resolved: check nothing rather than guess
        return {}


def _expected(annotation: Any) -> str:
    """``Optional[str]`` -> ``a string or None``."""
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string", type(None): "None"}
    if annotation in names:
        return names[annotation]
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_expected(a) for a in args)
    if annotation in (list, tuple) or origin in _SEQUENCES:
        return f"a list of {_expected(args[0])}s" if args and args[-1] is not Ellipsis and len(args) == 1 else "a list"
    return str(annotation).replace("typing.", "")


def check_values(target: Callable, kwargs: Dict[str, Any], where: str) -> None:
    """Raise ConfigError naming ``where.key`` for a value of the wrong type or out of range."""
    hints = _type_hints(target)
    for key, value in kwargs.items():
        if value is None or (isinstance(value, dict) and "type" in value):
            continue  # None: a default, or a value the builder fills in (num_classes); components: built later
        if key in hints and not matches(value, hints[key]):
            hint = (" YAML reads a number without a dot before the exponent (1e-4) as text: write 1.0e-4."
                    if isinstance(value, str) and value.replace("e", "").replace("-", "").replace(".", "").isdigit()
                    else "")
            owner = getattr(target, "__name__", "")
            raise ConfigError(f"{where}.{key}: {owner}.{key} expects {_expected(hints[key])}, got {value!r} "
                              f"({type(value).__name__}).{hint}", key=f"{where}.{key}")
        if key in RANGES:
            test, expected = RANGES[key]
            if not _all_numbers(value, test):
                raise ConfigError(f"{where}.{key}: expected {expected}, got {value!r}.", key=f"{where}.{key}")
