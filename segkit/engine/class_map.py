"""Exact class maps without resizing every class to full resolution.

The class map of an image is ``argmax`` over classes of its logits after a chain of per-channel
ops: the model's final bilinear resize to the input size, then ``reverse_transform`` (bilinear
resizes back to the original size, crops of padding). Every op acts on each channel alone, so
running the chain on a subset S of the channels gives, for those channels, exactly the values the
full chain gives; and ``argmax`` over S equals ``argmax`` over all classes wherever the winner
(the first class reaching the maximum) is in S. ``candidate_classes`` finds such an S from the
low-resolution logits alone:

Each value after a bilinear resize is a convex combination of a 2x2 neighbourhood of its input,
computed in float32 with non-negative weights, so it lies between that neighbourhood's minimum
and maximum up to a few rounding errors. Through ``n`` resizes, none of which reads a grid
coarser than the logits', an output pixel depends on at most ``n + 1`` consecutive input pixels
per axis (each resize widens the support by the pixel pitch it reads, at most one logit), all
inside the ``(2n+1) x (2n+1)`` window centred on one of them. In a window W, no
class can beat ``max_j min_W logit_j`` by more than the rounding tolerance, and class k can reach
at most ``max_W logit_k``; so a class whose maximum stays below the best minimum in every window
wins nowhere. An image with a handful of classes (ADE20K has 150) then resizes only those.

``candidate_classes`` does this in numpy for one image (dygraph evaluation and prediction, where it
is faster than Paddle's single-threaded pooling); ``candidate_ids`` does it for a single resize
(windows of 2x2 logits) with Paddle ops on a batch, so that it traces into a static program: the data-dependent number of classes is a
``nonzero`` + ``gather`` along the channel axis, which Paddle Inference, paddle2onnx (NonZero,
Gather), ONNX Runtime and OpenVINO all run with dynamic shapes. ``exact_argmax`` is the argmax
output op of exported programs built on it.
"""

from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import paddle
from paddle import nn

# Relative rounding allowance per resize: a bilinear value is four float32 products and three
# sums, each rounded (about 8 ulp of the largest magnitude); 32 ulp leaves a wide margin.
_ULPS_PER_RESIZE = 32 * float(np.finfo(np.float32).eps)
# Absolute allowance per resize: kernels may flush subnormal values (below float32's smallest normal) to 0,
# an error no relative allowance covers when every logit is that small.
_FLUSH_PER_RESIZE = 16 * float(np.finfo(np.float32).tiny)


def _tolerance(peak, radius: int):
    """The rounding allowance of ``radius`` resizes of values at most ``peak`` in magnitude."""
    return (peak * _ULPS_PER_RESIZE + _FLUSH_PER_RESIZE) * radius


def support_radius(low_size: Sequence[int], stages: Sequence[Tuple[str, Tuple[int, int]]]) -> Optional[int]:
    """Half-width of the low-resolution window every output pixel of the chain depends on.

    Args:
        low_size: (h, w) of the logits the chain starts from.
        stages: the chain's ops and the size each produces: ``('resize', (h, w))`` (bilinear) or
            ``('padding', (h, w))`` (a crop, which moves no pixel).

    Returns:
        The number of resizes in the chain, or None when a resize reads a grid coarser than the
        logits' (neighbouring pixels more than one logit apart), where the bound does not hold.
    """
    size = [float(n) for n in low_size]
    pitch = [1.0, 1.0]  # distance between neighbouring pixels of the current stage, in logits
    radius = 0
    for name, out in stages:
        if name == "resize":
            if max(pitch) > 1.0 + 1e-9:
                return None
            pitch = [p * n / o for p, n, o in zip(pitch, size, out)]
            radius += 1
        size = [float(n) for n in out]
    return radius


def candidate_classes(scores: np.ndarray, radius: int) -> np.ndarray:
    """Ascending ids of the classes that can win anywhere after a chain of ``radius`` resizes.

    The best minimum of a window is taken over the classes that lead some logit pixel (a lower
    threshold than over all classes, so possibly more candidates, never fewer); classes whose
    maximum over the whole image stays below every window's threshold are dropped before any
    window of theirs is computed.

    Args:
        scores: [K, h, w] float32 logits, the start of the chain.
        radius: as ``support_radius`` returns (at least 1).

    Returns:
        The candidates; every class when a score is NaN or infinite (their argmax is paddle's).
    """
    num_classes = scores.shape[0]
    peak = float(np.abs(scores).max())
    if not np.isfinite(peak):
        return np.arange(num_classes)
    tol = _tolerance(peak, radius)
    leaders = np.unique(scores.argmax(axis=0))
    threshold = _window_extreme(scores[leaders], radius, np.minimum).max(axis=0) - tol  # [h, w]
    maybe = np.flatnonzero(scores.reshape(num_classes, -1).max(axis=1) >= threshold.min())
    upper = _window_extreme(scores[maybe], radius, np.maximum)
    return maybe[(upper >= threshold).reshape(len(maybe), -1).any(axis=1)]


def _window_extreme(scores: np.ndarray, radius: int, op) -> np.ndarray:
    """Per-channel max (``op=np.maximum``) or min over the (2r+1)^2 window around each pixel,
    the border replicated (so a window near an edge holds only existing pixels)."""
    _, h, w = scores.shape
    padded = np.pad(scores, ((0, 0), (radius, radius), (radius, radius)), mode="edge")
    rows = padded[:, :h].copy()
    for i in range(1, 2 * radius + 1):
        op(rows, padded[:, i:i + h], out=rows)
    out = rows[:, :, :w].copy()
    for j in range(1, 2 * radius + 1):
        op(out, rows[:, :, j:j + w], out=out)
    return out


def exact_class_map(
    logits: paddle.Tensor,
    finish: Callable[[paddle.Tensor], paddle.Tensor],
    stages: Sequence[Tuple[str, Tuple[int, int]]],
) -> np.ndarray:
    """``argmax(finish(logits), axis=1)[0]`` computed on the classes that can win only.

    Args:
        logits: [1, K, h, w].
        finish: the per-channel chain (resizes, crops) to the output resolution.
        stages: that chain's ops with their sizes (see ``support_radius``).

    Returns:
        The [H, W] int64 class map, equal to the full computation bit for bit.
    """
    radius = support_radius(logits.shape[-2:], stages)
    if not radius or logits.dtype != paddle.float32 or logits.shape[0] != 1:
        # Nothing to save (crops only), no bound (a resize reading a grid coarser than the logits';
        # half precision, whose rounding the tolerance does not cover): the full computation.
        return paddle.argmax(finish(logits), axis=1)[0].numpy()
    ids = candidate_classes(logits[0].numpy(), radius)
    if ids.size == logits.shape[1]:
        return paddle.argmax(finish(logits), axis=1)[0].numpy()
    subset = paddle.index_select(logits, paddle.to_tensor(ids, place=logits.place), axis=1)
    winners = paddle.argmax(finish(subset), axis=1)[0].numpy()
    return ids[winners]


def candidate_ids(logits: paddle.Tensor) -> paddle.Tensor:
    """The classes that can win anywhere after one bilinear resize, in Paddle ops that trace into a
    static program; the candidates of a batch are those of any of its images.

    One resize blends, for each output pixel, a block of at most 2x2 adjacent logits, so the windows
    are those blocks (partial ones along the border, from the pooling's padding, which holds no value):
    tighter and cheaper than ``candidate_classes``' 3x3 windows. A class can win in block B only if
    it reaches B's threshold (the best minimum over B of any class, less the rounding allowance) at
    some pixel of B; so it can win somewhere only if at some pixel it reaches the lowest threshold
    of the blocks holding that pixel, a single map: no pooling of the K classes but the first.

    Args:
        logits: [N, K, h, w] float32 logits.

    Returns:
        [M] int64 ascending class ids; every class when a score is NaN or infinite.
    """
    peak = paddle.max(paddle.abs(logits))
    lowest = -nn.functional.max_pool2d(-logits, 2, stride=1, padding=1)  # [N, K, h+1, w+1]: block minima
    threshold = paddle.max(lowest, axis=1, keepdim=True) - _tolerance(peak, 1)
    bar = -nn.functional.max_pool2d(-threshold, 2, stride=1)  # [N, 1, h, w]: over the blocks holding each pixel
    wins = paddle.any(logits >= bar, axis=[0, 2, 3])
    return paddle.nonzero(paddle.logical_or(wins, paddle.logical_not(paddle.isfinite(peak)))).flatten()


def exact_argmax(logits: paddle.Tensor, size: Sequence, align_corners: bool) -> paddle.Tensor:
    """``argmax(interpolate(logits, size, 'bilinear', align_corners), axis=1)`` as int32 [N, 1, H, W],
    bit for bit, resizing only the classes ``candidate_ids`` keeps. Traces into a static program
    with dynamic batch and sizes (the argmax output op of exports)."""
    ids = candidate_ids(logits)
    subset = nn.functional.interpolate(paddle.gather(logits, ids, axis=1), size=size, mode="bilinear",
                                       align_corners=align_corners)
    winners = paddle.argmax(subset, axis=1, keepdim=True)
    return paddle.gather(ids, winners.flatten()).reshape(paddle.shape(winners)).astype("int32")


def resize_stage(size: Sequence[int]) -> List[Tuple[str, Tuple[int, int]]]:
    """The stage record of a bilinear resize to ``size`` (H, W)."""
    return [("resize", (int(size[0]), int(size[1])))]
