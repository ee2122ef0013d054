"""Palettes, pseudo-colour label images and overlays."""

from typing import List, Optional, Sequence

import numpy as np
from PIL import Image


def palette_array(palette: Sequence[Sequence[int]], num_classes: int) -> np.ndarray:
    """A [256, 3] uint8 colour table whose first rows are ``palette`` (the rest black)."""
    table = np.zeros((256, 3), np.uint8)
    colours = np.asarray(palette, dtype=np.int64).reshape(-1, 3)[:256]
    if len(colours) < num_classes:
        raise ValueError(f"the palette has {len(colours)} colours for {num_classes} classes")
    table[: len(colours)] = np.clip(colours, 0, 255)
    return table


def parse_custom_color(values: Optional[List[int]], num_classes: int) -> Optional[List[List[int]]]:
    """``--custom_color r g b r g b ...`` -> a list of [r, g, b], checked against ``num_classes``."""
    if not values:
        return None
    if len(values) % 3 or len(values) // 3 < num_classes:
        raise ValueError(
            f"--custom_color: got {len(values)} numbers; expected 3 per class (r g b) for {num_classes} classes, "
            f"i.e. {3 * num_classes} numbers"
        )
    return [list(values[i:i + 3]) for i in range(0, len(values), 3)]


def pseudo_color(pred: np.ndarray, palette: np.ndarray) -> Image.Image:
    """A palette ('P' mode) PNG image whose pixel values are the class ids of ``pred``."""
    image = Image.fromarray(pred.astype(np.uint8))  # mode 'L'; putpalette turns it into 'P'
    image.putpalette(palette.reshape(-1).tolist())
    return image


def overlay(image_rgb: np.ndarray, pred: np.ndarray, palette: np.ndarray, weight: float = 0.6) -> np.ndarray:
    """Blend the colour-coded prediction over the image (``weight`` is the prediction's share)."""
    colour = palette[pred.astype(np.int64)].astype(np.float32)
    blended = (1 - weight) * image_rgb.astype(np.float32) + weight * colour
    return np.clip(blended, 0, 255).astype(np.uint8)
