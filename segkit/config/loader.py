"""YAML loading with ``_base_`` inheritance and ``--opts`` overrides, remembering where each key came from.

Rules (PaddleSeg's, made strict):

* ``_base_`` is a path or a list of paths, relative to the file that names it. Bases are merged in
  order, then the file itself on top.
* Dicts are merged key by key; lists and scalars are replaced. A dict with ``_inherited_: False``
  replaces the inherited section instead of being merged into it.
* ``--opts a.b=value`` sets one key after loading; ``value`` is parsed as YAML (``0.01``, ``[512, 512]``,
  ``true``); numeric parts index into lists (``train_dataset.transforms.0.crop_size=[256,256]``).
"""

import copy
import os
from typing import Any, Dict, List, Sequence, Tuple

import yaml

from segkit.errors import ConfigError

Sources = Dict[str, str]


# Limits a hand-written config never reaches; past them the file is refused before it is expanded.
MAX_DEPTH = 50  # nested mappings / lists
MAX_VALUES = 100_000  # values after every alias is expanded (a "billion laughs" file expands to 10^9)


class StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing what would silently go wrong: a key repeated in one mapping
    (YAML keeps the last), nesting deeper than MAX_DEPTH, and aliases that expand to more than
    MAX_VALUES values (refused from the node graph, before anything is expanded)."""

    def __init__(self, stream, path: str):
        super().__init__(stream)
        self.path = path
        self.depth = 0

    def _where(self, mark) -> str:
        return f"{self.path}, line {mark.line + 1}" if mark else self.path

    def compose_node(self, parent, index):
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise ConfigError(f"{self._where(self.peek_event().start_mark)}: nested more than {MAX_DEPTH} levels "
                                  "deep; a config never needs that. Flatten the file.")
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise ConfigError(
                    f"{self._where(key_node.start_mark)}: key {key!r} appears twice in one mapping (first at line "
                    f"{seen[key] + 1}); YAML would silently keep the last. Remove one.")
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def expanded_size(node, memo=None) -> int:
    """How many values ``node`` holds once every alias is expanded (each shared node counted per use)."""
    memo = {} if memo is None else memo
    if id(node) not in memo:
        memo[id(node)] = 1  # a recursive alias counts once instead of looping
        children = node.value if isinstance(node.value, list) else []
        flat = [c for pair in children for c in (pair if isinstance(pair, tuple) else (pair,))]
        memo[id(node)] = 1 + sum(expanded_size(child, memo) for child in flat)
    return memo[id(node)]


def load_yaml_text(text: str, path: str) -> Any:
    """Parse ``text`` (from ``path``, named in messages) with StrictLoader's checks."""
    loader = StrictLoader(text, path)
    try:
        node = loader.get_single_node()
        if node is not None and expanded_size(node) > MAX_VALUES:
            raise ConfigError(f"{path}: its aliases (*name) expand to more than {MAX_VALUES} values; refused "
                              "without expanding them. Write the values out, or use fewer nested aliases.")
        return loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    finally:
        loader.dispose()


def _read_yaml(path: str, included_from: str = "") -> Dict[str, Any]:
    if not os.path.isfile(path):
        hint = f" (named in _base_ of {included_from})" if included_from else ""
        raise ConfigError(f"config file {path!r} does not exist{hint}. Check the path.")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason}); save the config as UTF-8.") from None
    data = load_yaml_text(text, path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(data).__name__}.")
    return data


def _record(node: Any, prefix: str, path: str, sources: Sources) -> None:
    """Note ``path`` as the origin of ``prefix`` and of every key below it."""
    sources[prefix] = path
    if isinstance(node, dict):
        for key, value in node.items():
            _record(value, f"{prefix}.{key}" if prefix else str(key), path, sources)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _record(value, f"{prefix}.{i}", path, sources)


def _merge(base: Dict[str, Any], top: Dict[str, Any]) -> Dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, dict) and value.get("_inherited_", True) is False:
            out[key] = {k: v for k, v in value.items() if k != "_inherited_"}
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _strip_markers(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip_markers(v) for k, v in node.items() if k != "_inherited_"}
    if isinstance(node, list):
        return [_strip_markers(v) for v in node]
    return node


def load_yaml_tree(path: str, _chain: Tuple[str, ...] = ()) -> Tuple[Dict[str, Any], Sources]:
    """Load ``path`` with its ``_base_`` files merged in.

    Returns:
        The merged dict and a map from every dotted key to the file that set it last.
    """
    path = os.path.abspath(path)
    if path in _chain:
        raise ConfigError(f"{path}: _base_ inheritance loops back to itself via {' -> '.join(_chain)}.")
    raw = _read_yaml(path, included_from=_chain[-1] if _chain else "")
    bases = raw.pop("_base_", [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{path}: _base_ must be a path or a list of paths, got {bases!r}.")
    merged: Dict[str, Any] = {}
    sources: Sources = {}
    for base in bases:
        base_cfg, base_sources = load_yaml_tree(os.path.join(os.path.dirname(path), base), _chain + (path,))
        merged = _merge(merged, base_cfg)
        sources.update(base_sources)
    merged = _merge(merged, raw)
    _record(_strip_markers(raw), "", path, sources)
    sources.pop("", None)
    return _strip_markers(merged), sources


def parse_opt(opt: str) -> Tuple[List[str], Any]:
    """Split ``'a.b=value'`` into ``(['a', 'b'], parsed value)``."""
    if "=" not in opt:
        raise ConfigError(f"--opts {opt!r}: expected key=value, e.g. batch_size=4 or model.backbone.type=mscan_t.")
    key, text = opt.split("=", 1)
    if not key:
        raise ConfigError(f"--opts {opt!r}: the key before '=' is empty.")
    value = load_yaml_text(text, f"--opts {opt!r}") if text else ""
    return key.split("."), value


def apply_opts(cfg: Dict[str, Any], sources: Sources, opts: Sequence[str]) -> None:
    """Apply ``key=value`` overrides to ``cfg`` in place, recording ``--opts`` as their source."""
    for opt in opts or ():
        parts, value = parse_opt(opt)
        node: Any = cfg
        for i, part in enumerate(parts[:-1]):
            where = ".".join(parts[: i + 1])
            if isinstance(node, list):
                node = _list_item(node, part, where)
            else:
                node = node.setdefault(part, {})
            if not isinstance(node, (dict, list)):
                raise ConfigError(f"--opts {opt}: {where} is a {type(node).__name__}, not a section with keys.")
        last = parts[-1]
        if isinstance(node, list):
            _list_item(node, last, opt)
            node[int(last)] = value
        else:
            node[last] = value
        _record(value, ".".join(parts), "--opts", sources)


def _list_item(node: list, part: str, where: str) -> Any:
    if not part.isdigit() or int(part) >= len(node):
        raise ConfigError(f"--opts {where}: the list there has {len(node)} items; use an index 0..{len(node) - 1}.")
    return node[int(part)]
