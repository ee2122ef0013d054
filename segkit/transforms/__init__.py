"""Data transforms: each a small class registered in TRANSFORMS under PaddleSeg's name.

A transform is called as ``data = t(data)`` on a dict with ``img`` (HxWxC array), ``label``
(HxW integer array, absent at prediction time) and ``trans_info`` (geometry records). See
``segkit.transforms.geometric`` for the geometry contract and ``compose`` for the pipeline.
"""

from segkit.transforms.compose import Compose, read_image, read_label, reverse_transform
from segkit.transforms.geometric import (
    LimitLong,
    Padding,
    RandomCenterCrop,
    RandomHorizontalFlip,
    RandomPaddingCrop,
    RandomRotation,
    RandomScaleAspect,
    RandomVerticalFlip,
    Resize,
    ResizeByLong,
    ResizeByShort,
    ResizeRangeScaling,
    ResizeStepScaling,
)
from segkit.transforms.photometric import Normalize, RandomBlur, RandomDistort, RandomNoise

__all__ = [
    "Compose",
    "LimitLong",
    "Normalize",
    "Padding",
    "RandomBlur",
    "RandomCenterCrop",
    "RandomDistort",
    "RandomHorizontalFlip",
    "RandomNoise",
    "RandomPaddingCrop",
    "RandomRotation",
    "RandomScaleAspect",
    "RandomVerticalFlip",
    "Resize",
    "ResizeByLong",
    "ResizeByShort",
    "ResizeRangeScaling",
    "ResizeStepScaling",
    "read_image",
    "read_label",
    "reverse_transform",
]
