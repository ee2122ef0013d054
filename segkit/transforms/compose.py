"""Chaining transforms (reading images and labels with ``segkit.transforms.image_io``), and mapping predictions back.

``Compose`` is the entry point of every pipeline: it reads ``data['img']`` / ``data['label']``
when they are paths, runs the transforms, and returns the image as float32 CHW and the label as
int64 HxW. ``reverse_transform`` undoes the recorded resizes and paddings on a logits or
prediction tensor, walking ``trans_info`` backwards.
"""

from typing import Any, List, Sequence, Tuple

import numpy as np

from segkit.errors import ConfigError, DatasetError
from segkit.transforms.image_io import read_image, read_label  # noqa: F401  (re-exported)


class Compose:
    """Read the inputs, run ``transforms`` in order, and return network-ready arrays.

    Reads ``img`` (array or path) and ``label`` (array or path, optional); sets ``img`` to
    float32 CxHxW, ``label`` to int64 HxW, and ``trans_info`` to the list of recorded geometry.

    Args:
        transforms: transform objects (callables on the data dict).
        to_rgb: convert images read from files from OpenCV's BGR to RGB.
        img_channels: 3 for colour, 1 for greyscale images.
    """

    def __init__(self, transforms: List[Any], to_rgb: bool = True, img_channels: int = 3):
        if not isinstance(transforms, (list, tuple)):
            raise ConfigError(f"transforms: expected a list of transforms, got {type(transforms).__name__}.")
        if img_channels not in (1, 3):
            raise ConfigError(f"img_channels: expected 1 or 3, got {img_channels!r}.")
        self.transforms = list(transforms)
        self.to_rgb = to_rgb
        self.img_channels = img_channels

    def __call__(self, data: dict) -> dict:
        if "img" not in data:
            raise ValueError("Compose: the data dict has no 'img' key")
        img = data["img"]
        if isinstance(img, str):
            img = read_image(img, self.img_channels, self.to_rgb)
        if not isinstance(img, np.ndarray):
            raise TypeError(f"Compose: data['img'] must be a path or an ndarray, got {type(img).__name__}")
        if img.ndim == 2:
            img = img[..., None]
        if img.shape[2] != self.img_channels:
            raise DatasetError(
                f"image has {img.shape[2]} channels but img_channels is {self.img_channels}; "
                "set img_channels in the dataset config."
            )
        data["img"] = img
        if isinstance(data.get("label"), str):
            data["label"] = read_label(data["label"])
        data.setdefault("trans_info", [])
        for op in self.transforms:
            data = op(data)
        img = data["img"]
        if img.ndim == 2:
            img = img[..., None]
        data["img"] = np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32)
        if data.get("label") is not None:
            data["label"] = np.asarray(data["label"], dtype=np.int64)
        return data


def _op_name(item: Any) -> str:
    """The op name of a trans_info record, whether plain or collated by a DataLoader."""
    name = item[0]
    while isinstance(name, (list, tuple)):
        name = name[0]
    return str(name)


def _size_of(item: Any) -> Tuple[int, int]:
    """The (h, w) of a trans_info record; collated records hold one-element tensors or lists."""
    h, w = item[1][0], item[1][1]

    def scalar(v: Any) -> int:
        if hasattr(v, "numpy"):
            v = v.numpy()
        return int(np.asarray(v).reshape(-1)[0])

    return scalar(h), scalar(w)


def reverse_stages(trans_info: Sequence, size: Tuple[int, int]) -> List[Tuple[str, Tuple[int, int]]]:
    """The ops ``reverse_transform`` applies to a prediction of spatial ``size``, newest record
    first, each with the size it produces; resizes to the size already held are left out, as
    ``reverse_transform`` skips them."""
    stages = []
    for item in reversed(list(trans_info)):
        name = _op_name(item)
        h, w = _size_of(item)
        if name == "resize" and (h, w) == tuple(size):
            continue
        size = (h, w) if name == "resize" else (min(h, size[0]), min(w, size[1]))
        stages.append((name, size))
    return stages


def reverse_transform(pred, trans_info: Sequence, mode: str = "bilinear"):
    """Undo recorded resizes and paddings on a prediction, newest first.

    Args:
        pred: a paddle tensor NxCxHxW (logits, or a prediction with C = 1).
        trans_info: the ``trans_info`` list of a sample: ``('resize', (h, w))`` or
            ``('padding', (h, w))`` records, each holding the size before the op. The collated
            form a DataLoader produces (names in lists, sizes as tensors) is accepted too.
        mode: ``bilinear`` (align_corners False) for logits, ``nearest`` for class ids.

    Returns:
        The tensor at the original image size, with ``pred``'s dtype.
    """
    import paddle
    import paddle.nn.functional as F

    if mode not in ("bilinear", "nearest"):
        raise ValueError(f"reverse_transform: mode must be 'bilinear' or 'nearest', got {mode!r}")
    dtype = pred.dtype
    for item in reversed(list(trans_info)):
        name = _op_name(item)
        h, w = _size_of(item)
        if name == "resize":
            if tuple(pred.shape[-2:]) == (h, w):
                continue
            work = pred if pred.dtype in (paddle.float32, paddle.float64) else pred.astype("float32")
            if mode == "bilinear":
                work = F.interpolate(work, size=(h, w), mode="bilinear", align_corners=False)
            else:
                work = F.interpolate(work, size=(h, w), mode="nearest")
            pred = work.astype(dtype) if work.dtype != dtype else work
        elif name == "padding":
            pred = pred[:, :, :h, :w]
        else:
            raise ValueError(f"reverse_transform: unknown trans_info record {name!r}")
    return pred
