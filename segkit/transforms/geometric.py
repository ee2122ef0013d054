"""Geometric transforms: resizing, cropping, padding, flipping, rotation.

Each transform moves ``data['img']`` and, when present, ``data['label']`` with the same geometry;
the label always uses nearest interpolation (so it stays integer and keeps its class ids) and
any new label pixel (padding, rotation border) takes ``label_padding_value``, the ignore index.

The deterministic size changes used at evaluation and prediction time append a record of the
size *before* the operation to ``data['trans_info']``: ``('resize', (h, w))`` or
``('padding', (h, w))``, as PaddleSeg does, so ``reverse_transform`` can map a prediction back.

Names and arguments follow PaddleSeg 2.8 (``paddleseg/transforms/transforms.py``, Apache-2.0),
so its YAML files work unchanged. Differences: randomness comes from ``numpy.random`` only; the
image stays uint8 through geometric ops when it arrives as uint8 (faster; ``Compose`` converts
to float32 at the end); ``ResizeByShort`` with a list draws the size per sample rather than once;
``RandomPaddingCrop`` with ``category_max_ratio < 1`` crops the image and label together (the
PaddleSeg 2.8 code assigns the label crop to the image there); nearest resizing samples at pixel
centres (``cv2.INTER_NEAREST_EXACT``) so label and image share the same geometry.
"""

import math
from typing import List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from segkit.errors import ConfigError
from segkit.registry import TRANSFORMS
from segkit.transforms.common import (
    as_float_if_needed,
    check_pair,
    check_prob,
    fill_value,
    label_op,
)

# Labels are resized with INTER_NEAREST_EXACT, which samples at pixel centres like the bilinear
# image resize; plain INTER_NEAREST (PaddleSeg's choice) is shifted by half a source pixel, so
# labels drift against their images when downscaling. NEAREST for images uses the same rule.
LABEL_INTERP = cv2.INTER_NEAREST_EXACT
INTERPOLATIONS = {
    "NEAREST": cv2.INTER_NEAREST_EXACT,
    "LINEAR": cv2.INTER_LINEAR,
    "CUBIC": cv2.INTER_CUBIC,
    "AREA": cv2.INTER_AREA,
    "LANCZOS4": cv2.INTER_LANCZOS4,
}


def _size(img: np.ndarray) -> Tuple[int, int]:
    return int(img.shape[0]), int(img.shape[1])


def resize_pair(data: dict, width: int, height: int, interp: int = cv2.INTER_LINEAR) -> dict:
    """Resize image (with ``interp``) and label (nearest) to ``width`` x ``height``."""
    width, height = max(int(width), 1), max(int(height), 1)
    img = data["img"]
    if _size(img) == (height, width):
        return data
    data["img"] = cv2.resize(img, (width, height), interpolation=interp)
    if img.ndim == 3 and data["img"].ndim == 2:  # OpenCV drops a single channel axis
        data["img"] = data["img"][..., None]
    if data.get("label") is not None:
        data["label"] = label_op(
            data["label"], lambda lab: cv2.resize(lab, (width, height), interpolation=LABEL_INTERP)
        )
    return data


def scaled_size(h: int, w: int, scale: float) -> Tuple[int, int]:
    """``(h, w)`` scaled by ``scale`` and rounded, at least 1 pixel each."""
    return max(int(round(h * scale)), 1), max(int(round(w * scale)), 1)


def pad_pair(
    data: dict, pad_h: int, pad_w: int, im_padding_value: float, label_padding_value: int
) -> dict:
    """Pad image and label at the bottom and right by ``pad_h`` rows and ``pad_w`` columns."""
    if pad_h <= 0 and pad_w <= 0:
        return data
    pad_h, pad_w = max(pad_h, 0), max(pad_w, 0)
    img = as_float_if_needed(data["img"], im_padding_value)
    padded = cv2.copyMakeBorder(
        img, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=fill_value(im_padding_value, img)
    )
    data["img"] = padded[..., None] if img.ndim == 3 and padded.ndim == 2 else padded
    if data.get("label") is not None:
        data["label"] = label_op(
            data["label"],
            lambda lab: cv2.copyMakeBorder(
                lab, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=label_padding_value
            ),
        )
    return data


def flip_pair(data: dict, axis: int) -> dict:
    """Mirror image and label left-right (``axis`` 1) or top-bottom (``axis`` 0)."""
    img = data["img"]
    flipped = cv2.flip(img, axis)
    data["img"] = flipped[..., None] if img.ndim == 3 and flipped.ndim == 2 else flipped
    if data.get("label") is not None:
        data["label"] = label_op(data["label"], lambda lab: cv2.flip(lab, axis))
    return data


def crop_pair(data: dict, y1: int, x1: int, h: int, w: int) -> dict:
    """Crop the window ``[y1:y1+h, x1:x1+w]`` from image and label."""
    data["img"] = data["img"][y1 : y1 + h, x1 : x1 + w]
    if data.get("label") is not None:
        data["label"] = data["label"][y1 : y1 + h, x1 : x1 + w]
    return data


@TRANSFORMS.register
class Resize:
    """Resize to a fixed size, or keep the aspect ratio and fit inside it.

    Reads ``img``, ``label``; changes their size; appends ``('resize', (h, w))`` to ``trans_info``.

    Args:
        target_size: ``[width, height]``.
        keep_ratio: scale by the factor that fits the long side in ``max(target_size)`` and the
            short side in ``min(target_size)`` instead of stretching to ``target_size``.
        size_divisor: round the output width and height up to a multiple of this.
        interp: image interpolation, one of NEAREST, LINEAR, CUBIC, AREA, LANCZOS4, RANDOM.
    """

    def __init__(
        self,
        target_size: Sequence[int] = (512, 512),
        keep_ratio: bool = False,
        size_divisor: Optional[int] = None,
        interp: str = "LINEAR",
    ):
        self.target_size = check_pair(target_size, "target_size", "Resize")
        if interp != "RANDOM" and interp not in INTERPOLATIONS:
            raise ConfigError(
                f"Resize.interp: got {interp!r}, expected one of {', '.join(INTERPOLATIONS)}, RANDOM."
            )
        if size_divisor is not None and (not isinstance(size_divisor, int) or size_divisor < 1):
            raise ConfigError(f"Resize.size_divisor: expected a positive int or null, got {size_divisor!r}.")
        self.keep_ratio = keep_ratio
        self.size_divisor = size_divisor
        self.interp = interp

    def __call__(self, data: dict) -> dict:
        h, w = _size(data["img"])
        data["trans_info"].append(("resize", (h, w)))
        width, height = self.target_size
        if self.keep_ratio:
            scale = min(max(self.target_size) / max(h, w), min(self.target_size) / min(h, w))
            width, height = round(w * scale), round(h * scale)
        if self.size_divisor:
            width = math.ceil(width / self.size_divisor) * self.size_divisor
            height = math.ceil(height / self.size_divisor) * self.size_divisor
        name = self.interp
        if name == "RANDOM":
            name = list(INTERPOLATIONS)[np.random.randint(len(INTERPOLATIONS))]
        return resize_pair(data, width, height, INTERPOLATIONS[name])


@TRANSFORMS.register
class ResizeByLong:
    """Resize so the long side equals ``long_size``, keeping the aspect ratio.

    Reads ``img``, ``label``; changes their size; appends ``('resize', (h, w))`` to ``trans_info``.

    Args:
        long_size: target length of the long side.
    """

    def __init__(self, long_size: int):
        self.long_size = int(long_size)

    def __call__(self, data: dict) -> dict:
        h, w = _size(data["img"])
        data["trans_info"].append(("resize", (h, w)))
        new_h, new_w = scaled_size(h, w, self.long_size / max(h, w))
        return resize_pair(data, new_w, new_h)


@TRANSFORMS.register
class ResizeByShort:
    """Resize so the short side equals ``short_size``, keeping the aspect ratio.

    Reads ``img``, ``label``; changes their size; appends ``('resize', (h, w))`` to ``trans_info``.

    Args:
        short_size: target length of the short side, or a list to draw it from per sample.
        max_size: the long side is capped at this; the short side shrinks to respect it.
    """

    def __init__(self, short_size: Union[int, List[int]], max_size: float = 1e10):
        self.short_sizes = list(short_size) if isinstance(short_size, (list, tuple)) else [short_size]
        self.max_size = max_size

    def __call__(self, data: dict) -> dict:
        h, w = _size(data["img"])
        data["trans_info"].append(("resize", (h, w)))
        short = self.short_sizes[np.random.randint(len(self.short_sizes))]
        if short / min(h, w) * max(h, w) > self.max_size:
            short = int(self.max_size / max(h, w) * min(h, w))
        new_h, new_w = scaled_size(h, w, short / min(h, w))
        return resize_pair(data, new_w, new_h)


@TRANSFORMS.register
class LimitLong:
    """Resize so the long side lies within ``[min_long, max_long]``, keeping the aspect ratio.

    Reads ``img``, ``label``; changes their size if needed; appends ``('resize', (h, w))``.

    Args:
        max_long: the long side is shrunk to this if longer.
        min_long: the long side is enlarged to this if shorter.
    """

    def __init__(self, max_long: Optional[int] = None, min_long: Optional[int] = None):
        if max_long is not None and min_long is not None and min_long > max_long:
            raise ConfigError(f"LimitLong: min_long ({min_long}) must not exceed max_long ({max_long}).")
        self.max_long = max_long
        self.min_long = min_long

    def __call__(self, data: dict) -> dict:
        h, w = _size(data["img"])
        data["trans_info"].append(("resize", (h, w)))
        long_side = target = max(h, w)
        if self.max_long is not None and long_side > self.max_long:
            target = self.max_long
        elif self.min_long is not None and long_side < self.min_long:
            target = self.min_long
        if target == long_side:
            return data
        new_h, new_w = scaled_size(h, w, target / long_side)
        return resize_pair(data, new_w, new_h)


@TRANSFORMS.register
class ResizeRangeScaling:
    """Resize so the long side is a random length in ``[min_value, max_value]``.

    Reads ``img``, ``label``; changes their size; appends ``('resize', (h, w))`` to ``trans_info``.

    Args:
        min_value: shortest long side.
        max_value: longest long side.
    """

    def __init__(self, min_value: int = 400, max_value: int = 600):
        if min_value > max_value:
            raise ConfigError(
                f"ResizeRangeScaling: min_value ({min_value}) must not exceed max_value ({max_value})."
            )
        self.min_value = min_value
        self.max_value = max_value

    def __call__(self, data: dict) -> dict:
        h, w = _size(data["img"])
        data["trans_info"].append(("resize", (h, w)))
        long_side = self.max_value
        if self.min_value != self.max_value:
            long_side = int(np.random.uniform(self.min_value, self.max_value) + 0.5)
        new_h, new_w = scaled_size(h, w, long_side / max(h, w))
        return resize_pair(data, new_w, new_h)


@TRANSFORMS.register
class ResizeStepScaling:
    """Scale by a random factor from ``min_scale_factor`` to ``max_scale_factor``.

    Reads ``img``, ``label``; changes their size; appends ``('resize', (h, w))`` to ``trans_info``.

    Args:
        min_scale_factor: smallest factor.
        max_scale_factor: largest factor.
        scale_step_size: factors are drawn from the grid with this step; 0 draws uniformly.
    """

    def __init__(
        self, min_scale_factor: float = 0.75, max_scale_factor: float = 1.25, scale_step_size: float = 0.25
    ):
        if min_scale_factor > max_scale_factor:
            raise ConfigError(
                f"ResizeStepScaling: min_scale_factor ({min_scale_factor}) must not exceed "
                f"max_scale_factor ({max_scale_factor})."
            )
        self.min_scale_factor = min_scale_factor
        self.max_scale_factor = max_scale_factor
        self.scale_step_size = scale_step_size

    def draw(self) -> float:
        """One random scale factor."""
        lo, hi, step = self.min_scale_factor, self.max_scale_factor, self.scale_step_size
        if lo == hi:
            return lo
        if step == 0:
            return float(np.random.uniform(lo, hi))
        factors = np.linspace(lo, hi, int((hi - lo) / step + 1))
        return float(factors[np.random.randint(len(factors))])

    def __call__(self, data: dict) -> dict:
        h, w = _size(data["img"])
        data["trans_info"].append(("resize", (h, w)))
        scale = self.draw()
        return resize_pair(data, int(round(scale * w)), int(round(scale * h)))


@TRANSFORMS.register
class Padding:
    """Pad at the bottom and right up to ``target_size``.

    Reads ``img``, ``label``; changes their size; appends ``('padding', (h, w))`` to ``trans_info``.

    Args:
        target_size: ``[width, height]`` (or one int for both) after padding; the image must not
            be larger.
        im_padding_value: value of new image pixels.
        label_padding_value: value of new label pixels (the ignore index).
    """

    def __init__(
        self,
        target_size: Union[int, Sequence[int]],
        im_padding_value: float = 127.5,
        label_padding_value: int = 255,
    ):
        if isinstance(target_size, int):
            target_size = (target_size, target_size)
        self.target_size = check_pair(target_size, "target_size", "Padding")
        self.im_padding_value = im_padding_value
        self.label_padding_value = label_padding_value

    def __call__(self, data: dict) -> dict:
        h, w = _size(data["img"])
        data["trans_info"].append(("padding", (h, w)))
        width, height = self.target_size
        if h > height or w > width:
            raise ValueError(
                f"Padding: the image ({w}x{h}) is larger than target_size ({width}x{height}); "
                "resize it first or enlarge target_size."
            )
        return pad_pair(data, height - h, width - w, self.im_padding_value, self.label_padding_value)


@TRANSFORMS.register
class RandomPaddingCrop:
    """Crop a random ``crop_size`` window, padding first if the image is smaller.

    Reads ``img``, ``label``; changes their size (to exactly ``crop_size``). Not recorded in
    ``trans_info``: a random crop cannot be undone, so it is a training-only transform.

    Args:
        crop_size: ``[width, height]`` of the crop.
        im_padding_value: value of new image pixels.
        label_padding_value: value of new label pixels (the ignore index).
        category_max_ratio: retry (up to ``loop_times``) while one class covers this fraction or
            more of the crop's labelled pixels; 1.0 disables the check.
        ignore_index: label value not counted by ``category_max_ratio``.
        loop_times: attempts for ``category_max_ratio``; the last draw is kept.
    """

    def __init__(
        self,
        crop_size: Sequence[int] = (512, 512),
        im_padding_value: float = 127.5,
        label_padding_value: int = 255,
        category_max_ratio: float = 1.0,
        ignore_index: int = 255,
        loop_times: int = 10,
    ):
        self.crop_size = check_pair(crop_size, "crop_size", "RandomPaddingCrop")
        if category_max_ratio <= 0:
            raise ConfigError(f"RandomPaddingCrop.category_max_ratio: must be > 0, got {category_max_ratio}.")
        if loop_times <= 0:
            raise ConfigError(f"RandomPaddingCrop.loop_times: must be > 0, got {loop_times}.")
        self.im_padding_value = im_padding_value
        self.label_padding_value = label_padding_value
        self.category_max_ratio = category_max_ratio
        self.ignore_index = ignore_index
        self.loop_times = loop_times

    def _offsets(self, h: int, w: int, crop_h: int, crop_w: int) -> Tuple[int, int]:
        return np.random.randint(0, h - crop_h + 1), np.random.randint(0, w - crop_w + 1)

    def _balanced(self, label: np.ndarray) -> bool:
        values, counts = np.unique(label, return_counts=True)
        counts = counts[values != self.ignore_index]
        return len(counts) > 1 and counts.max() / counts.sum() < self.category_max_ratio

    def __call__(self, data: dict) -> dict:
        crop_w, crop_h = self.crop_size
        h, w = _size(data["img"])
        if (h, w) == (crop_h, crop_w):
            return data
        data = pad_pair(data, crop_h - h, crop_w - w, self.im_padding_value, self.label_padding_value)
        h, w = _size(data["img"])
        y1, x1 = self._offsets(h, w, crop_h, crop_w)
        label = data.get("label")
        if self.category_max_ratio < 1.0 and label is not None:
            for _ in range(self.loop_times):
                if self._balanced(label[y1 : y1 + crop_h, x1 : x1 + crop_w]):
                    break
                y1, x1 = self._offsets(h, w, crop_h, crop_w)
        return crop_pair(data, y1, x1, crop_h, crop_w)


@TRANSFORMS.register
class RandomCenterCrop:
    """Crop a random window that keeps at least ``retain_ratio`` of the width and height.

    Reads ``img``, ``label``; changes their size. Training only (not recorded).

    Args:
        retain_ratio: ``[width_ratio, height_ratio]`` in [0, 1], the smallest fraction kept.
    """

    def __init__(self, retain_ratio: Sequence[float] = (0.5, 0.5)):
        self.retain_ratio = check_pair(retain_ratio, "retain_ratio", "RandomCenterCrop")
        if not all(0 <= r <= 1 for r in self.retain_ratio):
            raise ConfigError(f"RandomCenterCrop.retain_ratio: values must be in [0, 1], got {retain_ratio!r}.")

    def __call__(self, data: dict) -> dict:
        keep_w, keep_h = self.retain_ratio
        if keep_w == 1.0 and keep_h == 1.0:
            return data
        h, w = _size(data["img"])
        # cut (up to 1-retain of each side) is split at random between the two borders
        cut_w = np.random.randint(int(w * (1 - keep_w))) if int(w * (1 - keep_w)) > 0 else 0
        cut_h = np.random.randint(int(h * (1 - keep_h))) if int(h * (1 - keep_h)) > 0 else 0
        x1 = np.random.randint(cut_w) if cut_w > 0 else 0
        y1 = np.random.randint(cut_h) if cut_h > 0 else 0
        return crop_pair(data, y1, x1, h - cut_h, w - cut_w)


@TRANSFORMS.register
class RandomHorizontalFlip:
    """Mirror left-right with probability ``prob``.

    Reads and changes ``img``, ``label``. Training only (not recorded).

    Args:
        prob: probability of flipping.
    """

    def __init__(self, prob: float = 0.5):
        self.prob = check_prob(prob, "prob", "RandomHorizontalFlip")

    def __call__(self, data: dict) -> dict:
        if np.random.random() < self.prob:
            data = flip_pair(data, 1)
        return data


@TRANSFORMS.register
class RandomVerticalFlip:
    """Mirror top-bottom with probability ``prob``.

    Reads and changes ``img``, ``label``. Training only (not recorded).

    Args:
        prob: probability of flipping.
    """

    def __init__(self, prob: float = 0.1):
        self.prob = check_prob(prob, "prob", "RandomVerticalFlip")

    def __call__(self, data: dict) -> dict:
        if np.random.random() < self.prob:
            data = flip_pair(data, 0)
        return data


@TRANSFORMS.register
class RandomRotation:
    """Rotate by a random angle in ``[-max_rotation, max_rotation]`` degrees, growing the canvas.

    Reads ``img``, ``label``; changes them and their size (the canvas grows to hold the rotated
    image; new pixels take the padding values). Training only (not recorded).

    Args:
        max_rotation: largest absolute angle in degrees; 0 disables.
        im_padding_value: value of new image pixels.
        label_padding_value: value of new label pixels (the ignore index).
    """

    def __init__(self, max_rotation: float = 15, im_padding_value: float = 127.5, label_padding_value: int = 255):
        self.max_rotation = max_rotation
        self.im_padding_value = im_padding_value
        self.label_padding_value = label_padding_value

    def __call__(self, data: dict) -> dict:
        if self.max_rotation <= 0:
            return data
        h, w = _size(data["img"])
        angle = np.random.uniform(-self.max_rotation, self.max_rotation)
        matrix = cv2.getRotationMatrix2D((w // 2, h // 2), angle, 1.0)
        cos, sin = abs(matrix[0, 0]), abs(matrix[0, 1])
        new_w, new_h = int(h * sin + w * cos), int(h * cos + w * sin)
        matrix[0, 2] += new_w / 2 - w // 2
        matrix[1, 2] += new_h / 2 - h // 2
        img = as_float_if_needed(data["img"], self.im_padding_value)
        rotated = cv2.warpAffine(
            img,
            matrix,
            (new_w, new_h),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=fill_value(self.im_padding_value, img),
        )
        data["img"] = rotated[..., None] if img.ndim == 3 and rotated.ndim == 2 else rotated
        if data.get("label") is not None:
            data["label"] = label_op(
                data["label"],
                lambda lab: cv2.warpAffine(
                    lab,
                    matrix,
                    (new_w, new_h),
                    flags=cv2.INTER_NEAREST,
                    borderMode=cv2.BORDER_CONSTANT,
                    borderValue=self.label_padding_value,
                ),
            )
        return data


@TRANSFORMS.register
class RandomScaleAspect:
    """Crop a window of random area and aspect ratio, then resize it back to the input size.

    Reads and changes ``img``, ``label`` (size unchanged). Training only (not recorded).

    Args:
        min_scale: smallest window area as a fraction of the image area; 0 disables.
        aspect_ratio: smallest window aspect ratio (the largest is its inverse); 0 disables.
    """

    def __init__(self, min_scale: float = 0.5, aspect_ratio: float = 0.33):
        self.min_scale = min_scale
        self.aspect_ratio = aspect_ratio

    def __call__(self, data: dict) -> dict:
        if self.min_scale == 0 or self.aspect_ratio == 0:
            return data
        h, w = _size(data["img"])
        for _ in range(10):
            area = h * w * np.random.uniform(self.min_scale, 1.0)
            ratio = np.random.uniform(self.aspect_ratio, 1.0 / self.aspect_ratio)
            crop_w, crop_h = int(np.sqrt(area * ratio)), int(np.sqrt(area / ratio))
            if np.random.randint(10) < 5:
                crop_w, crop_h = crop_h, crop_w
            if 0 < crop_h < h and 0 < crop_w < w:
                y1, x1 = np.random.randint(0, h - crop_h), np.random.randint(0, w - crop_w)
                data = crop_pair(data, y1, x1, crop_h, crop_w)
                return resize_pair(data, w, h)
        return data

