"""LabelMe annotations (one JSON per image) to a segkit dataset: label PNGs, class list, file lists
and a ready training config (``tools/data/labelme2seg.py``).

Follows LabelMe's own ``labelme2voc`` and PaddleSeg's ``labelme2seg``: class 0 is ``_background_``,
shapes are painted in the order they appear in the file (a later shape covers an earlier one, so a
hole is a later ``_background_`` polygon inside another), and the label ``__ignore__`` paints the
ignore index (255). Polygons, rectangles and circles are areas; lines and points are not and are
refused rather than dropped silently.
"""

import base64
import io
import os
import shutil
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import yaml
from PIL import Image, ImageDraw

from segkit.datasets.base import default_palette
from segkit.datasets.convert import split_pairs, write_file_list
from segkit.errors import DatasetError
from segkit.progress import track
from segkit.visualize import palette_array, pseudo_color

BACKGROUND = "_background_"
IGNORE = "__ignore__"
IGNORE_INDEX = 255


def read_annotation(path: str) -> dict:
    """A LabelMe JSON file, checked for the keys the conversion needs."""
    import json

    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path}: not a readable LabelMe JSON file ({exc}).") from None
    if not isinstance(data, dict) or not isinstance(data.get("shapes"), list):
        raise DatasetError(f"{path}: no 'shapes' list; is this a LabelMe annotation file?")
    for i, shape in enumerate(data["shapes"]):
        if not isinstance(shape, dict) or "label" not in shape or "points" not in shape:
            raise DatasetError(f"{path}: shapes[{i}] has no 'label' or 'points'.")
    return data


def shape_mask(shape: dict, size: Tuple[int, int], where: str) -> np.ndarray:
    """The pixels a LabelMe shape covers, as an HxW bool mask (drawn as LabelMe draws it, with PIL).

    Args:
        shape: ``{'label', 'points', 'shape_type'}``; a missing type means a polygon.
        size: (height, width) of the image.
        where: the file and shape, for error messages.
    """
    kind = shape.get("shape_type") or "polygon"
    points = [tuple(float(v) for v in p) for p in shape["points"]]
    canvas = Image.new("L", (size[1], size[0]), 0)
    draw = ImageDraw.Draw(canvas)
    if kind == "polygon" and len(points) >= 3:
        draw.polygon(points, outline=1, fill=1)
    elif kind == "rectangle" and len(points) == 2:
        draw.rectangle(sorted_corners(points), outline=1, fill=1)
    elif kind == "circle" and len(points) == 2:
        (cx, cy), (px, py) = points
        r = float(np.hypot(cx - px, cy - py))
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=1, fill=1)
    elif kind in ("polygon", "rectangle", "circle"):
        need = "3 or more points" if kind == "polygon" else "2 points"
        raise DatasetError(f"{where}: a {kind} needs {need}, got {len(points)}; fix or delete it in LabelMe.")
    else:
        raise DatasetError(
            f"{where}: shape_type {kind!r} covers no area (only polygon, rectangle and circle do); "
            "redraw it as a polygon in LabelMe or delete it."
        )
    return np.asarray(canvas, dtype=bool)


def sorted_corners(points: Sequence[Tuple[float, float]]) -> List[float]:
    """[x0, y0, x1, y1] with x0 <= x1 and y0 <= y1 (LabelMe rectangles may be drawn in any direction)."""
    (xa, ya), (xb, yb) = points
    return [min(xa, xb), min(ya, yb), max(xa, xb), max(ya, yb)]


def rasterize(shapes: Sequence[dict], size: Tuple[int, int], class_ids: Dict[str, int], where: str) -> np.ndarray:
    """The HxW uint8 label of ``shapes``: background 0, shapes painted in order, later on top."""
    label = np.zeros(size, np.uint8)
    for i, shape in enumerate(shapes):
        name = shape["label"]
        if name != IGNORE and name not in class_ids:
            raise DatasetError(
                f"{where}: shapes[{i}] has the label {name!r}, which is not in the class list "
                f"{list(class_ids)}; add it to the --class_names file."
            )
        label[shape_mask(shape, size, f"{where}: shapes[{i}] ({name!r})")] = class_ids.get(name, IGNORE_INDEX)
    return label


def class_names_from(annotations: Sequence[Tuple[str, dict]], names_file: Optional[str] = None) -> List[str]:
    """The class list: from ``names_file`` (one name a line, ``_background_`` first), else
    ``_background_`` followed by every label in order of first appearance."""
    if names_file:
        with open(names_file, encoding="utf-8") as f:
            names = [line.strip() for line in f if line.strip()]
        if not names or names[0] != BACKGROUND:
            raise DatasetError(f"{names_file}: the first class must be {BACKGROUND} (id 0), got {names[:1]}.")
    else:
        names = [BACKGROUND]
        for _, data in annotations:
            names += [s["label"] for s in data["shapes"] if s["label"] not in names and s["label"] != IGNORE]
    if len(set(names)) != len(names) or len(names) > IGNORE_INDEX:
        raise DatasetError(f"class names must be unique and fewer than {IGNORE_INDEX}; got {len(names)} names.")
    return names


def read_source_image(json_path: str, data: dict) -> Tuple[Optional[str], Image.Image]:
    """The annotated image: the file ``imagePath`` names (next to the JSON), else the embedded ``imageData``."""
    source = os.path.join(os.path.dirname(json_path), data.get("imagePath") or "")
    if data.get("imagePath") and os.path.isfile(source):
        return source, Image.open(source)
    if data.get("imageData"):
        return None, Image.open(io.BytesIO(base64.b64decode(data["imageData"])))
    raise DatasetError(
        f"{json_path}: the image {source} does not exist and the file embeds no imageData; "
        "put the image next to the JSON file (as LabelMe saved it) or re-save with image data."
    )


def convert_one(json_path: str, output_dir: str, class_ids: Dict[str, int], palette: np.ndarray) -> Tuple[str, str]:
    """Write ``images/<stem>.<ext>`` and ``annotations/<stem>.png`` for one annotation; their relative paths."""
    data = read_annotation(json_path)
    source, image = read_source_image(json_path, data)
    size = (image.height, image.width)
    declared = (data.get("imageHeight"), data.get("imageWidth"))
    if None not in declared and tuple(declared) != size:
        raise DatasetError(f"{json_path}: imageHeight x imageWidth is {declared[0]}x{declared[1]} but the image "
                           f"is {size[0]}x{size[1]}; the annotation belongs to another image.")
    stem = os.path.splitext(os.path.basename(json_path))[0]
    ext = os.path.splitext(source)[1].lower() if source else ".png"
    image_rel, label_rel = f"images/{stem}{ext}", f"annotations/{stem}.png"
    if source:
        shutil.copyfile(source, os.path.join(output_dir, image_rel))
    else:
        image.convert("RGB").save(os.path.join(output_dir, image_rel))
    label = rasterize(data["shapes"], size, class_ids, json_path)
    pseudo_color(label, palette).save(os.path.join(output_dir, label_rel))
    return image_rel, label_rel


def find_annotations(input_dir: str) -> List[str]:
    """The LabelMe JSON files under ``input_dir`` (recursively), sorted."""
    if not os.path.isdir(input_dir):
        raise DatasetError(f"{input_dir}: no such folder; give the folder holding LabelMe's .json files.")
    found = sorted(os.path.join(root, n) for root, _, names in os.walk(input_dir) for n in names if n.endswith(".json"))
    if not found:
        raise DatasetError(f"{input_dir}: no .json files; LabelMe saves one next to each annotated image.")
    stems: Dict[str, str] = {}
    for path in found:
        other = stems.setdefault(os.path.splitext(os.path.basename(path))[0], path)
        if other != path:
            raise DatasetError(f"{other} and {path} have the same name; output files are named after it, rename one.")
    return found


def split_lists(pairs: List[Tuple[str, str]], fractions: Sequence[float], seed: int) -> List[List[Tuple[str, str]]]:
    """train / val (/ test) parts of ``pairs``; val is never empty (with one image it is that image)."""
    parts = split_pairs(pairs, fractions, seed)
    if not parts[1]:
        parts[1] = [parts[0].pop()] if len(parts[0]) > 1 else list(parts[0])
    return parts


def training_config(base: dict, output_dir: str, class_names: Sequence[str], crop_size: int, train_images: int) -> dict:
    """``base`` (a resolved config's data) with datasets reading the converted folder; the batch is
    at most the number of training images."""
    def common():
        return {"type": "Dataset", "dataset_root": os.path.abspath(output_dir), "num_classes": len(class_names),
                "ignore_index": IGNORE_INDEX, "class_names": list(class_names)}

    train = dict(common(), train_path=os.path.join(os.path.abspath(output_dir), "train.txt"), mode="train", transforms=[
        {"type": "ResizeStepScaling", "min_scale_factor": 0.5, "max_scale_factor": 2.0, "scale_step_size": 0.25},
        {"type": "RandomPaddingCrop", "crop_size": [crop_size, crop_size]},
        {"type": "RandomHorizontalFlip"},
        {"type": "RandomDistort", "brightness_range": 0.4, "contrast_range": 0.4, "saturation_range": 0.4},
        {"type": "Normalize"},
    ])
    val = dict(common(), val_path=os.path.join(os.path.abspath(output_dir), "val.txt"), mode="val",
               transforms=[{"type": "Normalize"}])
    config = {k: v for k, v in base.items() if k not in ("train_dataset", "val_dataset")}
    config.update(train_dataset=train, val_dataset=val, batch_size=min(int(base.get("batch_size", 8)), train_images))
    config.setdefault("model", {}).pop("num_classes", None)  # taken from the dataset
    return config


def convert_labelme(
    input_dir: str,
    output_dir: str,
    names_file: Optional[str] = None,
    fractions: Sequence[float] = (0.8, 0.2),
    seed: int = 0,
) -> Dict[str, object]:
    """Convert every LabelMe annotation under ``input_dir`` into ``output_dir``.

    Writes ``images/``, ``annotations/`` (palette PNGs whose pixel values are class ids),
    ``class_names.txt`` and ``train.txt`` / ``val.txt`` (/ ``test.txt`` with three fractions).

    Returns:
        ``class_names`` and the ``lists`` written (list file -> number of pairs).
    """
    paths = find_annotations(input_dir)
    names = class_names_from([(p, read_annotation(p)) for p in paths], names_file)
    class_ids = {name: i for i, name in enumerate(names)}
    palette = palette_array(default_palette(len(names)), len(names))
    for folder in ("images", "annotations"):
        os.makedirs(os.path.join(output_dir, folder), exist_ok=True)
    pairs = [convert_one(p, output_dir, class_ids, palette) for p in track(paths, desc="converting", unit="file")]
    with open(os.path.join(output_dir, "class_names.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(names) + "\n")
    lists = {}
    for name, part in zip(("train.txt", "val.txt", "test.txt"), split_lists(pairs, fractions, seed)):
        write_file_list(os.path.join(output_dir, name), part)
        lists[name] = len(part)
    return {"class_names": names, "lists": lists}


def write_config(path: str, config: dict, note: str) -> None:
    """Write ``config`` as YAML with a comment line on top."""
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"# {note}\n")
        yaml.safe_dump(config, f, sort_keys=False, default_flow_style=None)
