"""Photometric transforms: colour jitter, blur, noise and normalisation.

They change ``data['img']`` only; the label and the geometry are untouched. Names and arguments
follow PaddleSeg 2.8 (Apache-2.0). Randomness comes from ``numpy.random`` only.
"""

from typing import Sequence

import cv2
import numpy as np
from PIL import Image, ImageEnhance

from segkit.errors import ConfigError
from segkit.registry import TRANSFORMS
from segkit.transforms.common import check_prob


def to_uint8(img: np.ndarray) -> np.ndarray:
    """``img`` as uint8, clipping to [0, 255] (PIL and the blur filters need 8-bit images)."""
    if img.dtype == np.uint8:
        return img
    return np.clip(img, 0, 255).astype(np.uint8)


def _enhance(enhancer, factor: float):
    return lambda im: enhancer(im).enhance(factor)


def _shift_hue(delta: float):
    def apply(im: Image.Image) -> Image.Image:
        # OpenCV's *_FULL conversions use PIL's 0-255 hue scale and are ~10x faster than PIL's
        hsv = cv2.cvtColor(np.asarray(im), cv2.COLOR_RGB2HSV_FULL)
        hsv[..., 0] = (hsv[..., 0].astype(np.int16) + int(delta)) % 256  # hue is an angle: wrap
        return Image.fromarray(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB_FULL))

    return apply


@TRANSFORMS.register
class RandomDistort:
    """Jitter brightness, contrast, saturation, hue and sharpness in a random order.

    Reads and changes ``img`` (returned as float32 with integer values, as PaddleSeg does).

    Args:
        brightness_range: brightness factor drawn from ``1 +- brightness_range``.
        brightness_prob: probability of changing brightness.
        contrast_range: contrast factor drawn from ``1 +- contrast_range``.
        contrast_prob: probability of changing contrast.
        saturation_range: saturation factor drawn from ``1 +- saturation_range``.
        saturation_prob: probability of changing saturation.
        hue_range: hue shift drawn from ``+- hue_range`` (on PIL's 0-255 hue scale).
        hue_prob: probability of shifting hue (colour images only).
        sharpness_range: sharpness factor drawn from ``1 +- sharpness_range``.
        sharpness_prob: probability of changing sharpness.
    """

    def __init__(
        self,
        brightness_range: float = 0.5,
        brightness_prob: float = 0.5,
        contrast_range: float = 0.5,
        contrast_prob: float = 0.5,
        saturation_range: float = 0.5,
        saturation_prob: float = 0.5,
        hue_range: float = 18,
        hue_prob: float = 0.5,
        sharpness_range: float = 0.5,
        sharpness_prob: float = 0,
    ):
        self.ranges = {
            "brightness": brightness_range,
            "contrast": contrast_range,
            "saturation": saturation_range,
            "hue": hue_range,
            "sharpness": sharpness_range,
        }
        self.probs = {
            "brightness": check_prob(brightness_prob, "brightness_prob", "RandomDistort"),
            "contrast": check_prob(contrast_prob, "contrast_prob", "RandomDistort"),
            "saturation": check_prob(saturation_prob, "saturation_prob", "RandomDistort"),
            "hue": check_prob(hue_prob, "hue_prob", "RandomDistort"),
            "sharpness": check_prob(sharpness_prob, "sharpness_prob", "RandomDistort"),
        }

    def _op(self, name: str):
        r = self.ranges[name]
        if name == "hue":
            return _shift_hue(np.random.uniform(-r, r))
        enhancer = {
            "brightness": ImageEnhance.Brightness,
            "contrast": ImageEnhance.Contrast,
            "saturation": ImageEnhance.Color,
            "sharpness": ImageEnhance.Sharpness,
        }[name]
        return _enhance(enhancer, np.random.uniform(1 - r, 1 + r))

    def __call__(self, data: dict) -> dict:
        img = to_uint8(data["img"])
        squeeze = img.ndim == 3 and img.shape[2] == 1
        im = Image.fromarray(img[..., 0] if squeeze else img)
        names = [n for n in self.probs if n != "hue" or im.mode == "RGB"]
        for i in np.random.permutation(len(names)):
            if np.random.uniform(0, 1) < self.probs[names[i]]:
                im = self._op(names[i])(im)
        out = np.asarray(im).astype(np.float32)
        data["img"] = out[..., None] if squeeze else out
        return data


@TRANSFORMS.register
class RandomBlur:
    """Blur with probability ``prob`` using a random odd kernel size from 3 to 9.

    Reads and changes ``img`` (returned as float32).

    Args:
        prob: probability of blurring.
        blur_type: ``gaussian``, ``median``, ``blur`` (box) or ``random`` (one of the three).
    """

    BLUR_TYPES = ("gaussian", "median", "blur", "random")

    def __init__(self, prob: float = 0.1, blur_type: str = "gaussian"):
        self.prob = check_prob(prob, "prob", "RandomBlur")
        if blur_type not in self.BLUR_TYPES:
            raise ConfigError(f"RandomBlur.blur_type: got {blur_type!r}, expected one of {self.BLUR_TYPES}.")
        self.blur_type = blur_type

    def __call__(self, data: dict) -> dict:
        if self.prob > 0 and np.random.random() < self.prob:
            radius = min(np.random.randint(3, 10) | 1, 9)  # odd kernel, 3..9
            img = to_uint8(data["img"])
            kind = self.blur_type
            if kind == "random":
                kind = ("gaussian", "median", "blur")[np.random.randint(3)]
            if kind == "gaussian":
                img = cv2.GaussianBlur(img, (radius, radius), 0, 0)
            elif kind == "median":
                img = cv2.medianBlur(img, radius)
            else:
                img = cv2.blur(img, (radius, radius))
            data["img"] = img
        data["img"] = np.asarray(data["img"], dtype=np.float32)
        return data


@TRANSFORMS.register
class RandomNoise:
    """Add Gaussian noise with a random sigma in ``[0, max_sigma)``, with probability ``prob``.

    Reads and changes ``img`` (float32, clipped to [0, 255], when noise is added).

    Args:
        prob: probability of adding noise.
        max_sigma: largest standard deviation of the noise.
    """

    def __init__(self, prob: float = 0.5, max_sigma: float = 10.0):
        self.prob = check_prob(prob, "prob", "RandomNoise")
        self.max_sigma = max_sigma

    def __call__(self, data: dict) -> dict:
        if np.random.random() < self.prob:
            sigma = np.random.random() * self.max_sigma
            img = data["img"].astype(np.float32)
            img += np.random.normal(0.0, sigma, img.shape).astype(np.float32)
            data["img"] = np.clip(img, 0, 255)
        return data


@TRANSFORMS.register
class Normalize:
    """Scale to [0, 1], subtract ``mean`` and divide by ``std`` (per channel or shared).

    Reads ``img``; changes it to float32 ``(img / 255 - mean) / std``.

    Args:
        mean: one value or one per channel.
        std: one value or one per channel; none may be 0.
    """

    def __init__(self, mean: Sequence[float] = (0.5,), std: Sequence[float] = (0.5,)):
        if not isinstance(mean, (list, tuple)) or not isinstance(std, (list, tuple)):
            raise ConfigError(f"Normalize: mean and std must be lists, got {mean!r} and {std!r}.")
        if len(mean) not in (1, 3) or len(std) not in (1, 3):
            raise ConfigError(f"Normalize: mean and std need 1 or 3 values, got {mean!r} and {std!r}.")
        if any(s == 0 for s in std):
            raise ConfigError(f"Normalize.std: values must be non-zero, got {std!r}.")
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)
        # one multiply-add per pixel instead of divide, subtract, divide
        self._scale = 1.0 / (255.0 * self.std)
        self._shift = -self.mean / self.std

    def __call__(self, data: dict) -> dict:
        img = data["img"].astype(np.float32)
        data["img"] = img * self._scale + self._shift
        return data
