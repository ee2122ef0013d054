"""Pieces shared by the converters of upstream PyTorch checkpoints (HRViT, SegFormer, SegNeXt).

PyTorch and Paddle differ in two layouts that every converter meets: a Linear weight is
(out, in) in PyTorch and (in, out) in Paddle, and BatchNorm's running statistics are called
``running_mean`` / ``running_var`` in PyTorch and ``_mean`` / ``_variance`` in Paddle (PyTorch also
stores a ``num_batches_tracked`` counter, which Paddle does not have).
"""

from typing import Dict

import numpy as np

BN_BUFFERS = {"running_mean": "_mean", "running_var": "_variance"}


def torch_linear(weight: np.ndarray) -> np.ndarray:
    """A PyTorch Linear (out, in) or 1x1 conv (out, in, 1, 1) weight -> a Paddle Linear weight (in, out)."""
    return np.ascontiguousarray(weight.reshape(weight.shape[0], -1).T)


def rename_bn_buffer(key: str) -> str:
    """``x.running_mean`` -> ``x._mean`` and ``x.running_var`` -> ``x._variance``; other keys unchanged."""
    module, _, leaf = key.rpartition(".")
    return f"{module}.{BN_BUFFERS[leaf]}" if leaf in BN_BUFFERS else key


def strip_training_wrappers(state: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Drop a ``module.`` prefix (DataParallel) and PyTorch's BatchNorm ``num_batches_tracked`` counters."""
    return {
        (k[len("module.") :] if k.startswith("module.") else k): v
        for k, v in state.items()
        if not k.endswith("num_batches_tracked")
    }


def backbone_part(state: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """A segmentation checkpoint's keys as a bare backbone sees them.

    ``backbone.x`` becomes ``x``; the decoder's ``decode_head.x`` becomes ``head.x``, the name of an
    ImageNet classifier, which backbones load as an allowed-unexpected part (dropped). Other keys
    (a backbone-only file's) pass unchanged.
    """
    out = {}
    for key, value in state.items():
        if key.startswith("backbone."):
            key = key[len("backbone.") :]
        elif key.startswith("decode_head."):
            key = "head." + key[len("decode_head.") :]
        out[key] = value
    return out
