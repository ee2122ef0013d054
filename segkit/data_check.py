"""Label checks: what is wrong with a label, said in words, with the fix.

``check_label`` is what every dataset runs on each label it loads in train/val mode, so training
stops at the first bad label with the file name and the offending values instead of crashing deep
inside the loss. ``scan_dataset`` walks a whole dataset for ``tools/check_dataset.py`` and
gathers every problem plus a per-class pixel histogram.
"""

import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from segkit.errors import DatasetError
from segkit.progress import track


def label_histogram(label: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """The distinct values of ``label`` and their pixel counts, fast for 8/16-bit labels."""
    flat = label.reshape(-1)
    if flat.dtype in (np.uint8, np.uint16) and flat.size:
        counts = np.bincount(flat, minlength=1)
        values = np.flatnonzero(counts)
        return values, counts[values]
    return np.unique(flat, return_counts=True)


def bad_values(values: np.ndarray, num_classes: int, ignore_index: int) -> np.ndarray:
    """Values outside ``[0, num_classes)`` that are not ``ignore_index``."""
    values = np.asarray(values)
    return values[((values < 0) | (values >= num_classes)) & (values != ignore_index)]


def suggest_fix(values: Sequence[int], num_classes: int, ignore_index: int) -> str:
    """A sentence telling the user how to make labels with ``values`` fit the config."""
    values = sorted(int(v) for v in values)
    valid = [v for v in values if v != ignore_index]
    if set(values) <= {0, 255} and 255 in values and ignore_index != 255:
        return (
            "The labels look like 0/255 binary masks: convert 255 to 1 (e.g. label // 255) and set "
            "num_classes: 2."
        )
    if set(values) <= {0, 255} and 255 in values:
        return (
            "Only 0 and 255 occur: if these are binary masks, 255 is being ignored; convert 255 to 1 "
            "and set num_classes: 2."
        )
    if valid and valid[-1] == num_classes:
        return (
            f"The largest id is {num_classes}: if classes are numbered 1..{num_classes} and 0 marks "
            f"unlabelled pixels, apply reduce-zero-label (0 -> {ignore_index}, k -> k-1, as ADE20K does); "
            f"otherwise raise num_classes to {num_classes + 1}."
        )
    top = max(valid) if valid else num_classes - 1
    return (
        f"Set num_classes to at least {top + 1}, or set ignore_index to the value that marks "
        "unlabelled pixels, or remap the label ids (tools/data/ converters)."
    )


def check_label(
    label: np.ndarray,
    num_classes: int,
    ignore_index: int,
    path: str,
    image_size: Optional[Tuple[int, int]] = None,
) -> None:
    """Raise DatasetError if ``label`` cannot be trained on.

    Args:
        label: the loaded (and dataset-mapped) label.
        num_classes: valid ids are ``0 .. num_classes - 1``.
        ignore_index: the id of unlabelled pixels.
        path: the label file, named in the error.
        image_size: ``(h, w)`` of the matching image; the label must have the same size.
    """
    if label.ndim != 2:
        raise DatasetError(
            f"label {path} has shape {label.shape}: expected a single-channel HxW image of class ids. "
            "RGB colour labels must be converted to class-id PNGs (one id per pixel) first."
        )
    if image_size is not None and tuple(label.shape) != tuple(image_size):
        raise DatasetError(
            f"label {path} is {label.shape[1]}x{label.shape[0]} (WxH) but its image is "
            f"{image_size[1]}x{image_size[0]}: label and image must have the same size. "
            "Check that the file list pairs the right files."
        )
    values, _ = label_histogram(label)
    bad = bad_values(values, num_classes, ignore_index)
    if bad.size:
        shown = ", ".join(str(int(v)) for v in bad[:10]) + (" ..." if bad.size > 10 else "")
        raise DatasetError(
            f"label {path} holds value(s) {shown} outside [0, {num_classes}) that are not the "
            f"ignore_index {ignore_index}. {suggest_fix(values, num_classes, ignore_index)} "
            "Run tools/check_dataset.py --config <cfg> to scan every label."
        )


@dataclass
class ScanReport:
    """What ``scan_dataset`` found in one dataset.

    Attributes:
        num_samples: pairs scanned.
        class_pixels: pixel count per class id (length ``num_classes``).
        ignore_pixels: pixels equal to ignore_index.
        bad_values: label path -> offending values.
        size_mismatch: label path -> (label (h, w), image (h, w)).
        not_single_channel: label path -> shape, for RGB / RGBA labels.
        palette_labels: labels stored as palette PNGs (fine: indices are read; reported for info).
        jpeg_labels: labels stored as JPEG (lossy: ids get corrupted at edges).
        binary_masks: labels holding only 0 and 255.
        unreadable: label or image path -> reason.
    """

    num_classes: int
    ignore_index: int
    num_samples: int = 0
    class_pixels: np.ndarray = None
    ignore_pixels: int = 0
    bad_values: Dict[str, List[int]] = field(default_factory=dict)
    size_mismatch: Dict[str, Tuple[Tuple[int, int], Tuple[int, int]]] = field(default_factory=dict)
    not_single_channel: Dict[str, Tuple[int, ...]] = field(default_factory=dict)
    palette_labels: List[str] = field(default_factory=list)
    jpeg_labels: List[str] = field(default_factory=list)
    binary_masks: List[str] = field(default_factory=list)
    unreadable: Dict[str, str] = field(default_factory=dict)
    all_values: Dict[int, int] = field(default_factory=dict)

    def __post_init__(self):
        if self.class_pixels is None:
            self.class_pixels = np.zeros(self.num_classes, dtype=np.int64)

    @property
    def ok(self) -> bool:
        """True if nothing would stop training."""
        return not (self.bad_values or self.size_mismatch or self.not_single_channel or self.unreadable)

    def suggestions(self) -> List[str]:
        """Fixes for the problems found, one sentence each."""
        tips = []
        if self.bad_values:
            tips.append(suggest_fix(sorted(self.all_values), self.num_classes, self.ignore_index))
        if self.not_single_channel:
            tips.append("Convert RGB colour labels to single-channel class-id PNGs (one id per pixel).")
        if self.jpeg_labels:
            tips.append("Store labels as PNG: JPEG compression changes class ids along edges.")
        if self.size_mismatch:
            tips.append("Make each label the size of its image (check the pairing in the file list).")
        if self.binary_masks and not self.bad_values:
            tips.append("Labels hold only 0/255: if 255 means foreground, convert it to 1 (num_classes: 2).")
        empty = [i for i, n in enumerate(self.class_pixels) if n == 0]
        if empty and self.num_samples:
            tips.append(f"Classes {empty[:20]} never occur: check num_classes and the label mapping.")
        return tips


def _image_size(path: str) -> Tuple[int, int]:
    with Image.open(path) as im:  # reads the header only
        return im.size[1], im.size[0]


@dataclass
class FileFindings:
    """What one label file holds: the raw material ``ScanReport.add`` merges."""

    img_path: str
    label_path: str
    mode: str = ""
    shape: Tuple[int, ...] = ()
    image_size: Optional[Tuple[int, int]] = None
    values: Optional[np.ndarray] = None
    counts: Optional[np.ndarray] = None
    error: str = ""
    error_path: str = ""


def inspect_pair(img_path: str, label_path: str, map_label=None) -> FileFindings:
    """Read one label (and its image header) and summarise it; never raises for bad files."""
    found = FileFindings(img_path, label_path)
    try:
        with Image.open(label_path) as im:
            found.mode = im.mode
            label = np.asarray(im)
    except OSError as err:
        found.error, found.error_path = str(err), label_path
        return found
    if label.ndim == 2 and map_label is not None:
        label = map_label(label)
    found.shape = tuple(label.shape)
    try:
        found.image_size = _image_size(img_path)
    except OSError as err:
        found.error, found.error_path = str(err), img_path
    if label.ndim == 2:
        found.values, found.counts = label_histogram(label)
    return found


def _add(report: ScanReport, found: FileFindings) -> None:
    """Merge one file's findings into ``report``."""
    path = found.label_path
    if found.error and found.error_path == path:
        report.unreadable[path] = found.error
        return
    report.num_samples += 1
    if found.error:
        report.unreadable[found.error_path] = found.error
    if found.mode == "P":
        report.palette_labels.append(path)
    if os.path.splitext(path)[1].lower() in (".jpg", ".jpeg"):
        report.jpeg_labels.append(path)
    if len(found.shape) != 2:
        report.not_single_channel[path] = found.shape
        return
    if found.image_size is not None and found.shape != found.image_size:
        report.size_mismatch[path] = (found.shape, found.image_size)
    values, counts = found.values, found.counts
    for v, n in zip(values.tolist(), counts.tolist()):
        report.all_values[int(v)] = report.all_values.get(int(v), 0) + int(n)
    if set(values.tolist()) == {0, 255}:
        report.binary_masks.append(path)
    inside = (values >= 0) & (values < report.num_classes)
    np.add.at(report.class_pixels, values[inside].astype(np.int64), counts[inside])
    report.ignore_pixels += int(counts[values == report.ignore_index].sum())
    bad = bad_values(values, report.num_classes, report.ignore_index)
    if bad.size:
        report.bad_values[path] = [int(v) for v in bad]


_WORKER_MAP_LABEL = None


def _init_worker(map_label) -> None:
    global _WORKER_MAP_LABEL
    _WORKER_MAP_LABEL = map_label


def _inspect_in_worker(pair: Tuple[str, str]) -> FileFindings:
    return inspect_pair(pair[0], pair[1], _WORKER_MAP_LABEL)


def scan_dataset(dataset, limit: Optional[int] = None, num_workers: int = 0) -> ScanReport:
    """Scan every label of ``dataset`` (any segkit dataset: ``file_list``, ``map_label``).

    Labels are read and mapped as training would read them (e.g. ADE20K's reduce-zero-label).

    Args:
        dataset: a built dataset.
        limit: scan only the first ``limit`` pairs.
        num_workers: processes reading files in parallel (0: in this process).
    """
    report = ScanReport(num_classes=dataset.num_classes, ignore_index=dataset.ignore_index)
    pairs = [p for p in (dataset.file_list if limit is None else dataset.file_list[:limit]) if p[1] is not None]
    if num_workers > 0:
        from multiprocessing import Pool

        with Pool(num_workers, initializer=_init_worker, initargs=(dataset.map_label,)) as pool:
            for found in track(pool.imap(_inspect_in_worker, pairs, chunksize=8), len(pairs), "scanning", "label"):
                _add(report, found)
            # Let the workers end by themselves: the terminate() on leaving the block would SIGTERM them,
            # and Paddle's signal handler (inherited by forked workers) prints a C++ traceback for it.
            pool.close()
            pool.join()
    else:
        for img_path, label_path in track(pairs, desc="scanning", unit="label"):
            _add(report, inspect_pair(img_path, label_path, dataset.map_label))
    return report


def format_report(report: ScanReport, class_names: Optional[Sequence[str]] = None, title: str = "") -> str:
    """A human-readable summary of ``report``: problems, histogram and suggested fixes."""
    lines = [f"== {title} ==" if title else "==", f"labels scanned: {report.num_samples}"]

    def listing(name: str, items, show=lambda k: str(k)) -> None:
        if items:
            keys = list(items)
            lines.append(f"{name}: {len(keys)}")
            lines.extend(f"  {show(k)}" for k in keys[:10])
            if len(keys) > 10:
                lines.append(f"  ... and {len(keys) - 10} more")

    listing(
        f"labels with values outside [0, {report.num_classes}) other than ignore {report.ignore_index}",
        report.bad_values,
        lambda k: f"{k}: {report.bad_values[k][:10]}",
    )
    listing(
        "labels whose size differs from the image",
        report.size_mismatch,
        lambda k: f"{k}: label {report.size_mismatch[k][0]} vs image {report.size_mismatch[k][1]} (h, w)",
    )
    listing("RGB / multi-channel labels", report.not_single_channel, lambda k: f"{k}: {report.not_single_channel[k]}")
    listing("JPEG-compressed labels", report.jpeg_labels)
    listing("0/255 binary masks", report.binary_masks)
    listing("unreadable files", report.unreadable, lambda k: f"{k}: {report.unreadable[k]}")
    if report.palette_labels:
        lines.append(f"palette PNG labels (indices are used, fine): {len(report.palette_labels)}")
    total = int(report.class_pixels.sum()) + report.ignore_pixels
    lines.append("per-class pixels:")
    for i, n in enumerate(report.class_pixels.tolist()):
        name = class_names[i] if class_names and i < len(class_names) else f"class_{i}"
        share = 100.0 * n / total if total else 0.0
        lines.append(f"  {i:3d} {name:<24s} {n:>14d} {share:6.2f}%")
    share = 100.0 * report.ignore_pixels / total if total else 0.0
    lines.append(f"  ignore ({report.ignore_index}) {'':<18s} {report.ignore_pixels:>14d} {share:6.2f}%")
    tips = report.suggestions()
    lines.append("status: OK" if report.ok else "status: PROBLEMS FOUND")
    lines.extend(f"fix: {t}" for t in tips)
    return "\n".join(lines)
