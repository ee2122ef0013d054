"""Golden data for the published-weights parity tests: the weight generator and the reader.

``tests/data/upstream_golden.npz`` holds, per case (``hf_segformer_b0``, ``mmseg_segnext_t``, ...),
only what cannot be regenerated cheaply: the input image, the logits (and, for SegFormer, the four
backbone feature maps) that the upstream PyTorch code returned for it, the seed of the weights and
the upstream state dict's names, shapes and kinds *in the upstream layout*. The weights themselves
are drawn at test time by :func:`draw_weights`, the function ``tools/dev/make_upstream_golden.py``
ran before loading them into the upstream model, so the upstream code ran on exactly the weights
the tests rebuild and then feed through segkit's converters. A SHA-256 of the drawn weights is
stored too: if NumPy ever changed its random streams, the tests say so instead of reporting a
numerical mismatch. SegNeXt cases also hold the NMF's initial (uniform, not yet normalised) bases,
which both codebases otherwise draw from their own RNG.

The distributions differ from ``hrvit_golden``'s fixed ones: weight matrices are scaled by their
fan-in, so that the deep SegNeXt-B (BatchNorm with fixed statistics in eval) keeps finite, O(1)
activations. Distributions (one ``numpy.random.default_rng(seed)``, in the stored key order, float64 cast to
float32): norm scales and BatchNorm variances uniform on [0.5, 1.5]; norm shifts, BatchNorm means,
biases and layer scales normal(0, 0.1); weight matrices and kernels normal(0, 1 / sqrt(fan_in)),
fan_in being the product of the upstream shape after its first axis, so activations keep their
scale through the deep variants; BatchNorm ``num_batches_tracked`` counters a fixed int64.
"""

import json
import os
from typing import Dict, List, Sequence, Tuple

import numpy as np

from hrvit_golden import digest  # noqa: F401  (SHA-256 of drawn weights; also used by the generator)

GOLDEN_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "upstream_golden.npz")
OUTPUTS = ("input", "logits", "feat0", "feat1", "feat2", "feat3", "bases")

Spec = List[Tuple[str, Tuple[int, ...], str]]


def kind_of(name: str, shape: Sequence[int], dtype: str) -> str:
    """The distribution kind of one upstream tensor, from its name, shape and dtype."""
    if not dtype.startswith("float"):
        return "counter"
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "running_var":
        return "scale"
    if leaf == "running_mean" or len(shape) <= 1 and leaf != "weight":
        return "shift"  # biases, BatchNorm means, layer scales
    if len(shape) == 1:
        return "scale"  # a norm's weight
    return "matrix"


def draw_weights(spec: Sequence[Tuple[str, Sequence[int], str]], seed: int) -> Dict[str, np.ndarray]:
    """Random weights for ``spec`` (name, shape, kind), drawn in order from ``seed``."""
    rng = np.random.default_rng(seed)
    weights = {}
    for name, shape, kind in spec:
        shape = tuple(shape)
        if kind == "counter":
            weights[name] = np.array(1000, dtype="int64")
        elif kind == "scale":
            weights[name] = rng.uniform(0.5, 1.5, shape).astype("float32")
        elif kind == "shift":
            weights[name] = rng.normal(0.0, 0.1, shape).astype("float32")
        else:
            fan_in = int(np.prod(shape[1:]))
            weights[name] = rng.normal(0.0, 1.0 / np.sqrt(fan_in), shape).astype("float32")
    return weights


def case_names() -> List[str]:
    """The cases stored in the golden file."""
    with np.load(GOLDEN_FILE, allow_pickle=False) as archive:
        return sorted(k[: -len("_meta")] for k in archive.files if k.endswith("_meta"))


def load_case(case: str) -> Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray], dict]:
    """(upstream-named weights, {"input", "logits", ...}, meta) of ``case`` from the golden file."""
    with np.load(GOLDEN_FILE, allow_pickle=False) as archive:
        meta = json.loads(str(archive[f"{case}_meta"]))
        data = {key: archive[f"{case}_{key}"] for key in OUTPUTS if f"{case}_{key}" in archive.files}
    weights = draw_weights(meta["spec"], meta["weight_seed"])
    if digest(weights) != meta["weights_sha256"]:
        raise AssertionError(
            f"{GOLDEN_FILE}: NumPy {np.__version__} drew other weights from seed {meta['weight_seed']} than "
            f"the upstream code ran on (NumPy {meta['numpy']}); regenerate with tools/dev/make_upstream_golden.py"
        )
    return weights, data, meta
