"""Refusing a whole-image forward that cannot fit in memory, before it allocates anything.

SegFormer's efficient self-attention compares every token of a stage with every key of its
shrunk grid: at stride 4 with ``sr_ratio`` 8 that is ``(H/4 * W/4) * (H/32 * W/32)`` scores per
head, so its memory grows with the square of the pixels. On the CPU (and any device without a
fused attention kernel) Paddle's ``scaled_dot_product_attention`` materialises the scores and
their softmax side by side: 2 TiB for one 8200x8200 image with SegFormer-B0. Such an allocation
either fails deep inside Paddle or, with memory overcommit, gets the process killed mid-run.

``check_whole_image_fits`` compares a lower bound on the peak memory of one whole-image forward
with the memory available and refuses with the size and the fix (``--is_slide``). Only terms that
provably coexist enter the bound (the input, the class map, and for SegFormer the two
largest attention tensors), so a refusal is never wrong; an image that passes may still be too
large for models whose growth is not modelled here.
"""

import sys
from typing import Optional, Sequence

import paddle
import paddle.nn as nn

from segkit.config import TestConfig
from segkit.errors import DatasetError

GIB = 1024**3
FLOAT32 = 4


def _conv_out(size: int, conv: nn.Conv2D, axis: int) -> int:
    """The output length of ``conv`` along ``axis`` (0: height, 1: width) for an input of ``size``."""
    kernel, stride = conv._kernel_size[axis], conv._stride[axis]
    padding = conv._padding if isinstance(conv._padding, int) else conv._padding[axis]
    return (size + 2 * padding - kernel) // stride + 1


def segformer_attention_bytes(backbone: nn.Layer, height: int, width: int, fused: bool) -> int:
    """The largest attention allocation of a Mix Transformer (SegFormer's encoder) on one image.

    Per stage: ``heads * tokens * keys`` float32 scores, twice (the scores and their softmax exist
    together), unless ``fused`` (a fused kernel, as on the GPU, never holds them).
    """
    if fused:
        return 0
    largest = 0
    h, w = height, width
    for stage in backbone.stages:
        conv = stage.patch_embed.proj
        h, w = _conv_out(h, conv, 0), _conv_out(w, conv, 1)
        attn = stage.blocks[0].attn
        keys = h * w if attn.sr_ratio <= 1 else _conv_out(h, attn.sr, 0) * _conv_out(w, attn.sr, 1)
        largest = max(largest, 2 * attn.num_heads * h * w * keys * FLOAT32)
    return largest


def attention_bytes(model: nn.Layer, height: int, width: int, fused: bool = False) -> int:
    """The largest attention allocation of a whole-image forward of ``model`` (0 for a model without
    modelled attention): that of any Mix Transformer inside (``segformer_attention_bytes``)."""
    from segkit.models.segformer import MixVisionTransformer

    return max((segformer_attention_bytes(layer, height, width, fused)
                for layer in model.sublayers() if isinstance(layer, MixVisionTransformer)), default=0)


def whole_image_bytes(model: nn.Layer, channels: int, height: int, width: int, fused_attention: bool = False) -> int:
    """A lower bound on the memory one whole-image forward of ``model`` on a ``channels`` x ``height`` x
    ``width`` image needs at its peak: the float32 input and the int64 class map, plus the model's
    largest attention allocation (``attention_bytes``)."""
    return _image_and_class_map_bytes(channels, height, width) + attention_bytes(model, height, width, fused_attention)


def _image_and_class_map_bytes(channels: int, height: int, width: int) -> int:
    """The float32 input image and its int64 class map."""
    return height * width * (channels * FLOAT32 + 8)


def _read_int(path: str) -> Optional[int]:
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def available_bytes() -> Optional[int]:
    """Memory this process may still allocate on its device: free GPU memory on a GPU, else the
    kernel's MemAvailable capped by a cgroup memory limit; None when unknown."""
    if paddle.get_device().startswith("gpu"):
        props = paddle.device.cuda.get_device_properties()
        return props.total_memory - paddle.device.cuda.memory_allocated()
    if not sys.platform.startswith("linux"):
        return None
    free = None
    try:
        with open("/proc/meminfo") as f:
            free = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        pass
    for limit, usage in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                         ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        cap, used = _read_int(limit), _read_int(usage)
        if cap is not None and used is not None and cap < 1 << 60:
            free = min(free, cap - used) if free is not None else cap - used
    return free


def check_whole_image_fits(model: nn.Layer, shape: Sequence[int], where: str, test_config: TestConfig,
                           available: Optional[int] = None) -> None:
    """Refuse a whole-image forward of ``model`` on an image of ``shape`` (``[..., H, W]``, as fed to
    the model; with ``aug_eval`` at its largest scale) when it cannot fit in the ``available`` memory
    (default: ``available_bytes()``). Sliding-window inference is not checked.

    Raises:
        DatasetError: naming ``where`` (the image file), its size, the memory needed and the fix.
    """
    if test_config.is_slide:
        return
    available = available_bytes() if available is None else available
    if available is None:
        return
    scale = max(test_config.scales) if test_config.aug_eval and test_config.scales else 1.0
    height, width = (int(round(s * scale)) for s in shape[-2:])
    channels = int(shape[-3]) if len(shape) >= 3 else 1
    attention = attention_bytes(model, height, width, fused=paddle.get_device().startswith("gpu"))
    needed = _image_and_class_map_bytes(channels, height, width) + attention  # = whole_image_bytes
    if needed <= available:
        return
    why = " (its attention grows with the square of the pixels)" if attention else ""
    raise DatasetError(
        f"image {where} is {width}x{height} as fed to the model; a whole-image forward of {type(model).__name__} "
        f"at that size needs at least {needed / GIB:,.1f} GiB{why}, more than the {available / GIB:,.1f} GiB "
        "available. Predict it in windows: --is_slide --crop_size 1024 1024 --stride 768 768 (or "
        "test_config.is_slide: true in the config), or resize the image."
    )
