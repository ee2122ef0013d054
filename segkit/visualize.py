"""Palettes, pseudo-colour label images and overlays."""

import dataclasses
from typing import List, Optional, Sequence

import numpy as np
from PIL import Image

from segkit.metrics import confusion_matrix, image_miou


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


# ---- drawing helpers ---------------------------------------------------------------------------

# Anchor colours of a white -> dark blue ramp (like matplotlib's "Blues"); light cells read as rare.
_RAMP = np.array([[247, 251, 255], [198, 219, 239], [107, 174, 214], [33, 113, 181], [8, 48, 107]], np.float32)
_NO_PIXELS = (225, 225, 225)  # rows whose class has no labelled pixel: grey, distinct from 0 %


def ramp_colours(values: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] to RGB uint8 colours on a white -> dark blue ramp."""
    pos = np.clip(np.asarray(values, np.float32), 0, 1) * (len(_RAMP) - 1)
    low = np.minimum(np.floor(pos).astype(np.int64), len(_RAMP) - 2)
    frac = (pos - low)[..., None]
    return np.round(_RAMP[low] * (1 - frac) + _RAMP[low + 1] * frac).astype(np.uint8)


def font(size: int):
    """A scalable font of ``size`` pixels (Pillow's bundled one), or the fixed bitmap font without FreeType."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # Pillow < 10.1 or no FreeType
        return ImageFont.load_default()


def _text_size(draw, text: str, typeface) -> tuple:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=typeface)
    return right - left, bottom - top


@dataclasses.dataclass
class _HeatmapLayout:
    """Where the parts of a confusion heat map go (pixels)."""

    n: int
    cell: int
    name_w: int
    pad: int = 10
    title_h: int = 48
    axis_h: int = 22
    bar_w: int = 70

    @property
    def grid(self) -> int:
        return self.n * self.cell

    @property
    def left(self) -> int:
        return self.pad + self.axis_h + self.name_w

    @property
    def top(self) -> int:
        return self.pad + self.title_h + self.axis_h + self.name_w

    @property
    def bar_h(self) -> int:
        return min(self.grid, 300)


def confusion_heatmap(matrix: np.ndarray, class_names: Sequence[str], title: str = "") -> Image.Image:
    """A heat map of ``matrix[label, prediction]`` with class names on both axes.

    Colours are row-normalised (each row shows where that class's pixels went, i.e. its recall on
    the diagonal), so rare classes are as readable as frequent ones; rows of classes with no
    labelled pixel are grey. Cells are large enough to print the percentage for up to ~30 classes;
    for more (e.g. ADE20K's 150) they shrink and only the colours remain.

    Args:
        matrix: [K, K] pixel counts, rows = label, columns = prediction.
        class_names: K names.
        title: a line printed above the map.
    """
    from PIL import ImageDraw

    matrix = np.asarray(matrix, np.float64)
    n = len(matrix)
    if matrix.shape != (n, n) or len(class_names) != n:
        raise ValueError(f"confusion_heatmap: matrix {matrix.shape} and {len(class_names)} class names do not match")
    rows = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    cell = int(np.clip(1400 // max(n, 1), 12, 44))
    label_font = font(int(np.clip(cell * 0.8, 10, 15)))
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    names = [f"{i} {name}" for i, name in enumerate(class_names)]
    box = _HeatmapLayout(n, cell, max(_text_size(measure, s, label_font)[0] for s in names) + 8)
    title = title or "Confusion matrix"
    title_w = _text_size(measure, title, font(16))[0] + 2 * box.pad
    width = max(box.left + box.grid + box.pad + box.bar_w + box.pad, title_w, 520)
    height = box.top + max(box.grid, box.bar_h + 70) + box.pad
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    _heatmap_cells(canvas, draw, box, share, rows[:, 0] > 0)
    _heatmap_names(canvas, draw, box, names, label_font)
    _heatmap_titles(canvas, draw, box, title)
    _heatmap_colour_bar(canvas, draw, box)
    return canvas


def _heatmap_cells(canvas, draw, box: _HeatmapLayout, share: np.ndarray, labelled: np.ndarray) -> None:
    """One colour per cell (the n x n colour array upscaled), percentages when they fit, grid lines."""
    n, cell, left, top = box.n, box.cell, box.left, box.top
    colours = ramp_colours(share)
    colours[~labelled] = _NO_PIXELS
    canvas.paste(Image.fromarray(colours).resize((box.grid, box.grid), Image.NEAREST), (left, top))
    if cell >= 28:  # room to print the percentage in each cell
        value_font = font(max(9, cell // 3))
        for r in np.flatnonzero(labelled):
            for c in range(n):
                text = f"{100 * share[r, c]:.0f}"
                tw, th = _text_size(draw, text, value_font)
                fill = "white" if share[r, c] > 0.5 else (60, 60, 60)
                draw.text((left + c * cell + (cell - tw) / 2, top + r * cell + (cell - th) / 2 - 2), text, fill=fill, font=value_font)
    # Thin lines between classes when cells are big; with small cells, a line every 10 classes
    # guides the eye without washing out the colours.
    step = 1 if cell >= 20 else 10
    for k in list(range(0, n, step)) + [n]:
        draw.line([(left, top + k * cell), (left + box.grid, top + k * cell)], fill=(190, 190, 190))
        draw.line([(left + k * cell, top), (left + k * cell, top + box.grid)], fill=(190, 190, 190))


def _heatmap_names(canvas, draw, box: _HeatmapLayout, names: Sequence[str], label_font) -> None:
    """Row names (labels) right-aligned left of the grid; column names (predictions) rotated above it."""
    from PIL import ImageDraw

    cell = box.cell
    for i, text in enumerate(names):
        tw, th = _text_size(draw, text, label_font)
        draw.text((box.left - tw - 4, box.top + i * cell + (cell - th) / 2 - 2), text, fill="black", font=label_font)
    column = Image.new("RGB", (box.name_w, box.grid), "white")
    column_draw = ImageDraw.Draw(column)
    for i, text in enumerate(names):
        th = _text_size(column_draw, text, label_font)[1]
        column_draw.text((4, i * cell + (cell - th) / 2 - 2), text, fill="black", font=label_font)
    canvas.paste(column.rotate(90, expand=True), (box.left, box.top - box.name_w))


def _heatmap_titles(canvas, draw, box: _HeatmapLayout, title: str) -> None:
    """The axis titles, the title and the line saying how to read the map."""
    from PIL import ImageDraw

    axis_font = font(16)
    text = "prediction"
    draw.text((box.left + (box.grid - _text_size(draw, text, axis_font)[0]) / 2, box.pad + box.title_h), text,
              fill="black", font=axis_font)
    side = Image.new("RGB", (box.grid, box.axis_h), "white")
    side_draw = ImageDraw.Draw(side)
    text = "label"
    side_draw.text(((box.grid - _text_size(side_draw, text, axis_font)[0]) / 2, 0), text, fill="black", font=axis_font)
    canvas.paste(side.rotate(90, expand=True), (box.pad, box.top))
    draw.text((box.pad, box.pad), title, fill="black", font=font(16))
    note = "rows: label, columns: prediction; colour" + (" and number" if box.cell >= 28 else "") + ": % of the row's pixels"
    draw.text((box.pad, box.pad + 22), note, fill=(70, 70, 70), font=font(13))


def _heatmap_colour_bar(canvas, draw, box: _HeatmapLayout) -> None:
    """The colour bar from 0 % (bottom) to 100 % (top), and the colour of rows without labelled pixels."""
    bar_x, top, bar_h = box.left + box.grid + box.pad, box.top, box.bar_h
    ramp = ramp_colours(np.linspace(1, 0, bar_h))[:, None, :].repeat(16, axis=1)
    canvas.paste(Image.fromarray(ramp), (bar_x, top))
    draw.rectangle([bar_x, top, bar_x + 15, top + bar_h - 1], outline=(120, 120, 120))
    small = font(12)
    draw.text((bar_x + 20, top - 6), "100%", fill="black", font=small)
    draw.text((bar_x + 20, top + bar_h - 10), "0%", fill="black", font=small)
    draw.rectangle([bar_x, top + bar_h + 16, bar_x + 15, top + bar_h + 31], fill=_NO_PIXELS, outline=(120, 120, 120))
    draw.text((bar_x + 20, top + bar_h + 16), "no\nlabel\npixels", fill="black", font=small)


IGNORED_COLOUR = (255, 255, 255)  # pixels that are no class (the ignore index): white, as no palette's class 0 is


def colour_label(ids: np.ndarray, palette: np.ndarray, num_classes: int) -> np.ndarray:
    """RGB image of class ids; ids outside [0, num_classes) (e.g. the ignore index) are white."""
    ids = np.asarray(ids).astype(np.int64)
    rgb = palette[np.clip(ids, 0, 255)].copy()
    rgb[(ids < 0) | (ids >= num_classes)] = IGNORED_COLOUR
    return rgb


def _fit(image: np.ndarray, min_width: int, max_width: int, nearest: bool) -> np.ndarray:
    """Scale ``image`` so its width lies in [min_width, max_width] (small images grow by whole factors)."""
    h, w = image.shape[:2]
    if w < min_width:
        factor = -(-min_width // w)
        size = (w * factor, h * factor)
    elif w > max_width:
        size = (max_width, max(1, round(h * max_width / w)))
    else:
        return image
    return np.asarray(Image.fromarray(image).resize(size, Image.NEAREST if nearest else Image.BILINEAR))


def _fitting_font(draw, text: str, width: int, largest: int = 18, smallest: int = 9):
    """The largest font (down to ``smallest``) in which ``text`` fits ``width`` pixels."""
    for size in range(largest, smallest - 1, -1):
        typeface = font(size)
        if _text_size(draw, text, typeface)[0] <= width:
            return typeface
    return font(smallest)


def side_by_side(
    panels: Sequence[np.ndarray],
    titles: Sequence[str],
    present: Sequence[int],
    class_names: Sequence[str],
    palette: np.ndarray,
    min_panel_width: int = 320,
    max_panel_width: int = 1024,
) -> Image.Image:
    """Panels (RGB arrays of one size) next to each other with titles, and a legend of ``present`` classes.

    Args:
        panels: RGB uint8 images, e.g. the image, the coloured prediction and the coloured label.
        titles: one title per panel.
        present: the class ids to list in the legend (those in the prediction or label).
        class_names: names of all classes.
        palette: [256, 3] colour table.
        min_panel_width: narrower panels are enlarged by a whole factor, so titles and details stay legible.
        max_panel_width: wider panels are shrunk (class maps always by nearest neighbour).
    """
    from PIL import ImageDraw

    shrunk = [_fit(p, min_panel_width, max_panel_width, nearest=i > 0) for i, p in enumerate(panels)]
    ph, pw = shrunk[0].shape[:2]
    legend_font = font(14)
    gap, title_h, swatch, line_h = 8, 28, 16, 22
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    entries = [f"{c} {class_names[c]}" for c in present]
    heading = "classes present"
    legend_w = max([_text_size(measure, s, legend_font)[0] + swatch + gap for s in entries]
                   + [_text_size(measure, heading, font(18))[0]]) + 2 * gap
    legend_rows = max(1, (ph + title_h) // line_h - 1)  # entries per legend column
    legend_cols = max(1, -(-len(entries) // legend_rows))
    width = len(shrunk) * (pw + gap) + gap + legend_cols * legend_w
    canvas = Image.new("RGB", (width, ph + title_h + gap), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (panel, title) in enumerate(zip(shrunk, titles)):
        x = gap + i * (pw + gap)
        canvas.paste(Image.fromarray(panel), (x, title_h))
        draw.text((x, 4), title, fill="black", font=_fitting_font(draw, title, pw))
    x0 = len(shrunk) * (pw + gap) + gap
    draw.text((x0, 4), heading, fill="black", font=font(18))
    for k, (cls, text) in enumerate(zip(present, entries)):
        x = x0 + (k // legend_rows) * legend_w
        y = title_h + (k % legend_rows) * line_h
        colour = tuple(int(v) for v in palette[cls])
        draw.rectangle([x, y + 2, x + swatch, y + 2 + swatch], fill=colour, outline=(90, 90, 90))
        draw.text((x + swatch + gap, y + 2), text, fill="black", font=legend_font)
    return canvas


def comparison(
    image_rgb: np.ndarray,
    pred: np.ndarray,
    palette: np.ndarray,
    class_names: Sequence[str],
    label: Optional[np.ndarray] = None,
    ignore_index: int = 255,
) -> Image.Image:
    """image | prediction [| label] with a legend of the classes present (``side_by_side``).

    With a label the prediction's title carries the image's mIoU; ignored label pixels are white.

    Args:
        image_rgb: HxWx3 (or HxWx1) uint8 image.
        pred: HxW class ids.
        palette: [256, 3] colour table.
        class_names: one name per class.
        label: HxW class ids in training ids, or None.
        ignore_index: the label value that is no class.
    """
    num_classes = len(class_names)
    if image_rgb.ndim == 2 or image_rgb.shape[-1] == 1:  # grey input
        image_rgb = np.repeat(image_rgb.reshape(*image_rgb.shape[:2], 1), 3, axis=-1)
    panels = [image_rgb, colour_label(pred, palette, num_classes)]
    titles = ["image", "prediction"]
    classes = set(np.unique(pred).tolist())
    if label is not None:
        miou = image_miou(confusion_matrix(pred, label, num_classes, ignore_index))
        titles[1] = f"prediction (mIoU {miou:.3f})"
        panels.append(colour_label(label, palette, num_classes))
        titles.append("label (white: ignored)")
        classes |= set(np.unique(label[label != ignore_index]).tolist())
    present = sorted(int(c) for c in classes if 0 <= c < num_classes)
    return side_by_side(panels, titles, present, class_names, palette)
