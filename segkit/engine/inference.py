"""Inference on one image: whole, sliding window, multi-scale + flip; mapped back to the original size.

Memory stays bounded: one image is processed at a time, slide inference accumulates window by window
into a single logits buffer at the network input size, and only the final logits of that one image
are resized to the original resolution.
"""

import math
from typing import Iterator, List, Sequence, Tuple

import numpy as np
import paddle
import paddle.nn.functional as F
from paddle import nn

from segkit.config import TestConfig
from segkit.engine.class_map import exact_class_map, resize_stage
from segkit.models.base import head_resolution
from segkit.transforms import reverse_transform
from segkit.transforms.compose import reverse_stages


def _main_logits(model: nn.Layer, x: paddle.Tensor) -> paddle.Tensor:
    out = model(x)
    return out[0] if isinstance(out, (list, tuple)) else out


def slide_windows(height: int, width: int, crop: Sequence[int], stride: Sequence[int]) -> Iterator[Tuple[int, int, int, int]]:
    """Window boxes (top, bottom, left, right) covering an image; ``crop`` and ``stride`` are (w, h).

    Windows are ``crop`` sized where the image allows, the last row and column are shifted back so
    they end at the border, and together they cover every pixel.
    """
    crop_w, crop_h = crop
    stride_w, stride_h = stride
    rows = max(math.ceil((height - crop_h) / stride_h), 0) + 1
    cols = max(math.ceil((width - crop_w) / stride_w), 0) + 1
    for r in range(rows):
        for c in range(cols):
            bottom = min(r * stride_h + crop_h, height)
            right = min(c * stride_w + crop_w, width)
            yield max(bottom - crop_h, 0), bottom, max(right - crop_w, 0), right


def _numpy_view(tensor: paddle.Tensor) -> np.ndarray:
    """The tensor's memory as a NumPy array without a copy where DLPack allows it (CPU)."""
    try:
        return np.from_dlpack(tensor)
    except (AttributeError, BufferError, RuntimeError, TypeError):  # e.g. GPU memory
        return tensor.numpy()


def _tensor_view(array: np.ndarray) -> paddle.Tensor:
    """A paddle tensor on ``array``'s memory, without a copy where DLPack allows it."""
    try:
        return paddle.from_dlpack(array)
    except (AttributeError, BufferError, RuntimeError, TypeError):
        return paddle.to_tensor(array)


def _float32(logits: paddle.Tensor) -> paddle.Tensor:
    return logits if logits.dtype == paddle.float32 else logits.astype("float32")


@paddle.no_grad()
def slide_inference(model: nn.Layer, image: paddle.Tensor, crop: Sequence[int], stride: Sequence[int]) -> paddle.Tensor:
    """Logits of ``image`` [1, C, H, W] averaged over overlapping windows (by coverage).

    Each window's logits are added into one [1, K, H, W] float32 buffer as soon as they are
    computed, and the buffer is divided by the coverage in place, so besides the buffer only one
    window's logits exist. On the CPU the buffer is a NumPy array sharing memory with the returned
    tensor: adding into a slice of it makes no temporary copy, where paddle's add on a slice
    briefly copies the whole buffer (+150 MiB at 2048x1024 with 19 classes).

    Args:
        model: the model, in eval mode.
        image: one image [1, C, H, W].
        crop: window size (width, height); windows are clipped to the image.
        stride: window step (width, height).
    """
    height, width = image.shape[-2:]
    total = None
    count = np.zeros([height, width], dtype=np.float32)
    for top, bottom, left, right in slide_windows(height, width, crop, stride):
        logits = _float32(_main_logits(model, image[:, :, top:bottom, left:right]))
        if total is None:
            on_cpu = logits.place.is_cpu_place()
            shape = [1, logits.shape[1], height, width]
            total = np.zeros(shape, dtype=np.float32) if on_cpu else paddle.zeros(shape, dtype="float32")
        if on_cpu:
            total[:, :, top:bottom, left:right] += _numpy_view(logits)
        else:  # on an accelerator: accumulate there, temporaries are cheap compared to a host round trip
            total[:, :, top:bottom, left:right] += logits
        count[top:bottom, left:right] += 1.0
        del logits
    if on_cpu:
        total /= count
        return _tensor_view(total)
    return total / paddle.to_tensor(count, place=total.place)


def _single(model: nn.Layer, image: paddle.Tensor, cfg: TestConfig) -> paddle.Tensor:
    if cfg.is_slide:
        return slide_inference(model, image, cfg.crop_size, cfg.stride)
    return _float32(_main_logits(model, image))


def flip_variants(cfg: TestConfig) -> List[List[int]]:
    """The axes to flip for each test-time copy: [] (none), [3] (horizontal), [2] (vertical)."""
    flips = [[]]
    if cfg.flip_horizontal:
        flips.append([3])
    if cfg.flip_vertical:
        flips.append([2])
    return flips


@paddle.no_grad()
def aug_inference(model: nn.Layer, image: paddle.Tensor, cfg: TestConfig) -> paddle.Tensor:
    """Sum of softmax probabilities over scales and flips, at the input size of ``image``.

    Every copy is mapped back (flipped back, resized to the input size) before it is added, and
    the sum is kept in one buffer, so memory holds the buffer plus one copy's logits.
    """
    height, width = image.shape[-2:]
    total = None
    for scale in cfg.scales:
        size = (int(height * scale + 0.5), int(width * scale + 0.5))
        scaled = image if scale == 1.0 else F.interpolate(image, size=size, mode="bilinear", align_corners=False)
        for axes in flip_variants(cfg):
            logits = _single(model, paddle.flip(scaled, axes) if axes else scaled, cfg)
            logits = paddle.flip(logits, axes) if axes else logits
            if tuple(logits.shape[-2:]) != (height, width):
                logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
            probs = F.softmax(logits, axis=1)
            del logits
            if total is None:
                total = probs
            else:
                total.add_(probs)
            del probs
        del scaled
    return total


@paddle.no_grad()
def infer_image(model: nn.Layer, image: paddle.Tensor, trans_info: Sequence, cfg: TestConfig) -> paddle.Tensor:
    """Logits (or summed probabilities with aug) of one transformed image, at its original size.

    Args:
        model: the model, in eval mode.
        image: [1, C, H, W], as the transforms produced it.
        trans_info: the sample's geometry records, to undo resizes and paddings.
        cfg: whole / slide / aug settings.
    """
    logits = aug_inference(model, image, cfg) if cfg.aug_eval else _single(model, image, cfg)
    return reverse_transform(logits, trans_info, mode="bilinear")


@paddle.no_grad()
def predict_classes(model: nn.Layer, image: paddle.Tensor, trans_info: Sequence, cfg: TestConfig) -> np.ndarray:
    """The class map of one transformed image at its original size: ``argmax`` of ``infer_image``.

    Bit-equal to ``paddle.argmax(infer_image(...), axis=1)[0]``. Whole-image inference takes the
    logits at the head's resolution and resizes only the classes that can win somewhere
    (``segkit.engine.class_map``), the model's own final resize included. Sliding and multi-scale
    inference accumulate every class at the input size, as ``infer_image`` does: finding the
    candidates at that size costs more than the resize back saves (measured: 4.9 s against 3.5 s
    for 150 classes at 512x512 -> 512x683), so they take the plain argmax.

    Returns:
        [H, W] int64 class ids.
    """
    if cfg.aug_eval or cfg.is_slide:
        return paddle.argmax(infer_image(model, image, trans_info, cfg), axis=1)[0].numpy()
    with head_resolution(model):
        logits = _main_logits(model, image)
    size = image.shape[-2:]
    if logits.shape[-2:] == size:  # no final resize in the model (or a model outside the contract)
        return paddle.argmax(reverse_transform(_float32(logits), trans_info, mode="bilinear"), axis=1)[0].numpy()
    align = model.output_align_corners

    def finish(t: paddle.Tensor) -> paddle.Tensor:  # the model's final resize, then the reverse transforms
        t = _float32(F.interpolate(t, size=size, mode="bilinear", align_corners=align))
        return reverse_transform(t, trans_info, mode="bilinear")

    return exact_class_map(logits, finish, resize_stage(size) + reverse_stages(trans_info, size))


@paddle.no_grad()
def classes_and_probabilities(model: nn.Layer, image: paddle.Tensor, trans_info: Sequence,
                              cfg: TestConfig) -> Tuple[np.ndarray, paddle.Tensor]:
    """The class map [H, W] (int64) and the class probabilities [C, H, W] of one transformed image at
    its original size: the softmax of ``infer_image``'s logits, or with ``aug_eval`` its summed
    probabilities normalised. For ``--auc_roc`` and ``--save_probabilities``, which need every
    class at full resolution; ``predict_classes`` is cheaper for the class map alone."""
    output = infer_image(model, image, trans_info, cfg)
    probs = output / output.sum(axis=1, keepdim=True) if cfg.aug_eval else F.softmax(output, axis=1)
    return paddle.argmax(output, axis=1)[0].numpy(), probs[0]
