"""How the code reads: short functions in segkit/ and tools/ (STYLE.md: long functions are a smell)."""

import ast
import glob
import os

from conftest import ROOT

MAX_FUNCTION_LINES = 60


def long_functions(max_lines: int = MAX_FUNCTION_LINES):
    """``(lines, "path:line:name")`` of every function in segkit/ and tools/ longer than ``max_lines``."""
    found = []
    for pattern in ("segkit/**/*.py", "tools/**/*.py"):
        for path in sorted(glob.glob(os.path.join(ROOT, pattern), recursive=True)):
            with open(path, encoding="utf-8") as f:
                tree = ast.parse(f.read(), filename=path)
            for node in ast.walk(tree):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    lines = node.end_lineno - node.lineno + 1
                    if lines > max_lines:
                        found.append((lines, f"{os.path.relpath(path, ROOT)}:{node.lineno}:{node.name}"))
    return found


def test_no_function_is_longer_than_60_lines():
    assert long_functions() == []


def test_the_check_sees_functions():
    assert any("segkit/engine/train.py" in where for _, where in long_functions(max_lines=20))


def test_model_and_backbone_constructors_take_typed_keyword_only_arguments():
    """STYLE.md habit 4: configs are checked against these signatures, so a positional, untyped or
    ``**kwargs`` parameter would let a wrong value or a typo through."""
    import inspect

    import segkit.models  # noqa: F401  (registers every model and backbone)
    from segkit.models.rtformer import SegHead
    from segkit.models.segformer import AllMLPHead
    from segkit.models.segnext import LightHamHead
    from segkit.registry import BACKBONES, MODELS

    builders = {f"{registry.name}:{name}": registry.get(name) for registry in (MODELS, BACKBONES) for name in registry}
    builders.update({head.__name__: head for head in (AllMLPHead, LightHamHead, SegHead)})
    loose = [f"{name}.{param.name}" for name, builder in builders.items()
             for param in inspect.signature(builder).parameters.values()
             if param.kind is not param.KEYWORD_ONLY or param.annotation is param.empty]
    assert len(builders) > 30 and loose == []
