"""HRViT golden data: the NumPy weight generator and the reader of ``tests/data/hrvit_golden.npz``.

The golden file holds, per variant (``b1``, ``b2``), only what cannot be regenerated cheaply: the
input image, the four feature maps the official PyTorch code returned for it, the seed of the
weights and the list of the official parameter names, shapes and kinds. The weights themselves
(millions of numbers) are drawn at test time by :func:`draw_weights`, the same function that
``tools/dev/make_hrvit_golden.py`` ran before loading them into the official model, so the
official code ran on exactly the weights the tests rebuild. A SHA-256 of the drawn weights is stored
too: if a future NumPy ever changed its random streams, the tests fail saying so instead of
reporting a numerical mismatch.

Distributions (every draw comes from one ``numpy.random.default_rng(seed)``, in the stored key
order, as float64 and then cast to float32):

===========================================  ==================================
tensor kind                                   distribution
===========================================  ==================================
``bn_weight``, ``ln_weight``, ``bn_var``      uniform on [0.5, 1.5]
``bn_bias``, ``ln_bias``, ``bn_mean``         normal, mean 0, std 0.1
``other`` (convolutions, linears, biases)     normal, mean 0, std 0.05
===========================================  ==================================

The official code initialises the attention output batch norm (``attn.attn_bn``) to zero, which
switches the attention branch off; here it is random like every other tensor, so the attention
really contributes to the outputs.
"""

import hashlib
import json
import os
from typing import Dict, List, Sequence, Tuple

import numpy as np

GOLDEN_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "hrvit_golden.npz")
VARIANTS = ("b1", "b2")

# kind -> (distribution, two parameters): uniform (low, high) or normal (mean, std)
DISTRIBUTIONS = {
    "bn_weight": ("uniform", 0.5, 1.5),
    "bn_var": ("uniform", 0.5, 1.5),
    "ln_weight": ("uniform", 0.5, 1.5),
    "bn_bias": ("normal", 0.0, 0.1),
    "bn_mean": ("normal", 0.0, 0.1),
    "ln_bias": ("normal", 0.0, 0.1),
    "other": ("normal", 0.0, 0.05),
}

Spec = List[Tuple[str, Tuple[int, ...], str]]


def draw_weights(spec: Sequence[Tuple[str, Sequence[int], str]], seed: int) -> Dict[str, np.ndarray]:
    """Random float32 weights for ``spec`` (name, shape, kind), drawn in order from ``seed``."""
    rng = np.random.default_rng(seed)
    weights = {}
    for name, shape, kind in spec:
        law, a, b = DISTRIBUTIONS[kind]
        draw = rng.uniform if law == "uniform" else rng.normal
        weights[name] = np.asarray(draw(a, b, tuple(shape)), dtype="float32")
    return weights


def digest(weights: Dict[str, np.ndarray]) -> str:
    """SHA-256 over the names and float32 bytes of ``weights``, in their order."""
    sha = hashlib.sha256()
    for name, value in weights.items():
        sha.update(name.encode())
        sha.update(np.ascontiguousarray(value, dtype="float32").tobytes())
    return sha.hexdigest()


def load_case(variant: str) -> Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray]]:
    """(official-named weights, {"input", "out0".."out3"}) of ``variant`` from the golden file."""
    with np.load(GOLDEN_FILE, allow_pickle=False) as archive:
        meta = json.loads(str(archive[f"{variant}_meta"]))
        data = {key: archive[f"{variant}_{key}"] for key in ("input", "out0", "out1", "out2", "out3")}
    weights = draw_weights(meta["spec"], meta["weight_seed"])
    if digest(weights) != meta["weights_sha256"]:
        raise AssertionError(
            f"{GOLDEN_FILE}: NumPy {np.__version__} drew other weights from seed {meta['weight_seed']} than "
            f"the official code ran on (NumPy {meta['numpy']}); regenerate with tools/dev/make_hrvit_golden.py"
        )
    return weights, data
