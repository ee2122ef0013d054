"""Helpers shared by the transforms: argument checks and label-safe OpenCV calls.

OpenCV's geometric functions do not accept int64 arrays, and labels may arrive as int64 (or
uint16 / int32 for datasets with many classes). ``label_op`` runs an OpenCV call on the label in
the narrowest dtype that holds its values exactly, then restores the original dtype, so a label
never goes through a lossy cast.
"""

from typing import Callable, Sequence, Tuple

import numpy as np

from segkit.errors import ConfigError

# (low, high, dtype) in the order tried: the first range that holds the label's values wins.
_LABEL_WORK_DTYPES = ((0, 255, np.uint8), (0, 65535, np.uint16), (-(2**31), 2**31 - 1, np.int32))
_OPENCV_NATIVE = (np.uint8, np.uint16, np.int16, np.int32, np.float32)


def label_op(label: np.ndarray, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Apply ``fn`` (an OpenCV call using nearest interpolation) to ``label`` without losing values.

    Args:
        label: an HxW integer array.
        fn: maps an HxW array to an HxW array of the same dtype.

    Returns:
        ``fn(label)`` with ``label``'s dtype.
    """
    if label.dtype.type in _OPENCV_NATIVE:
        return fn(label)
    low, high = (int(label.min()), int(label.max())) if label.size else (0, 0)
    for lo, hi, dtype in _LABEL_WORK_DTYPES:
        if lo <= low and high <= hi:
            return fn(label.astype(dtype)).astype(label.dtype)
    raise ValueError(f"label values span [{low}, {high}], too wide to transform exactly")


def check_pair(value, name: str, owner: str) -> Tuple:
    """Check that ``value`` is a list/tuple of two numbers and return it as a tuple."""
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ConfigError(f"{owner}.{name}: expected a list of 2 numbers [width, height], got {value!r}.")
    return tuple(value)


def check_prob(value: float, name: str, owner: str) -> float:
    """Check that ``value`` is a probability in [0, 1]."""
    if not 0.0 <= float(value) <= 1.0:
        raise ConfigError(f"{owner}.{name}: expected a probability in [0, 1], got {value!r}.")
    return float(value)


def channels(img: np.ndarray) -> int:
    """Number of channels of an HxW or HxWxC image."""
    return 1 if img.ndim == 2 else img.shape[2]


def fill_value(value: float, img: np.ndarray) -> Sequence[float]:
    """The per-channel border value OpenCV expects for ``img``."""
    return (float(value),) * channels(img)


def as_float_if_needed(img: np.ndarray, value: float) -> np.ndarray:
    """Promote a uint8 image to float32 when ``value`` (a fill value) is not a uint8 integer.

    Images stay uint8 through the geometric transforms for speed; a fill value such as 127.5
    cannot be stored in uint8, so the image is promoted first to keep PaddleSeg's exact values.
    """
    if img.dtype == np.uint8 and not (float(value).is_integer() and 0 <= value <= 255):
        return img.astype(np.float32)
    return img
