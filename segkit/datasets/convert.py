"""Label converters and file-list creation, as pure functions the tools in ``tools/data/`` call.

Conversions are lookup tables over the 256 possible uint8 ids, applied per file. Each output is
written to a temporary name and renamed into place, so an interrupted run never leaves a half
written label behind and a rerun skips the files that are already done (resumable). Files are
processed in parallel with a process pool.
"""

import os
import random
from multiprocessing import Pool
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from segkit.datasets.base import list_files
from segkit.datasets.cityscapes import LABEL_ID_TO_TRAIN_ID, LABEL_SUFFIX, RAW_SUFFIX
from segkit.datasets.cocostuff import LABEL_SUFFIX as COCO_LABEL_SUFFIX
from segkit.datasets.cocostuff import STUFFTHING_ID_TO_TRAIN_ID
from segkit.errors import DatasetError
from segkit.progress import track


def make_lut(mapping: Dict[int, int], default: int = 255) -> np.ndarray:
    """A 256-entry uint8 table mapping each id in ``mapping`` and every other id to ``default``."""
    lut = np.full(256, default, dtype=np.uint8)
    for src, dst in mapping.items():
        lut[src] = dst
    return lut


CITYSCAPES_LUT = make_lut(LABEL_ID_TO_TRAIN_ID)
# 255 (unlabelled) and the 11 unused thing ids map to 255.
COCOSTUFF_LUT = make_lut(STUFFTHING_ID_TO_TRAIN_ID)


def apply_lut(label: np.ndarray, lut: np.ndarray, path: str = "<array>") -> np.ndarray:
    """Map every pixel of an 8-bit single-channel ``label`` through ``lut``."""
    if label.ndim != 2 or label.dtype != np.uint8:
        raise DatasetError(
            f"{path}: expected a single-channel 8-bit id image, got shape {label.shape} dtype {label.dtype}."
        )
    return lut[label]


def convert_label_file(src: str, dst: str, lut: np.ndarray) -> bool:
    """Write ``lut`` applied to ``src`` as PNG ``dst``; skip if ``dst`` exists. Returns True if written."""
    if os.path.exists(dst):
        return False
    with Image.open(src) as im:
        label = np.asarray(im)
    out = apply_lut(label, lut, src)
    tmp = f"{dst}.tmp{os.getpid()}.png"
    Image.fromarray(out).save(tmp)
    os.replace(tmp, dst)  # atomic: a rerun never sees a partial file
    return True


def _convert_task(task: Tuple[str, str, np.ndarray]) -> bool:
    return convert_label_file(*task)


def run_tasks(tasks: Sequence[Tuple[str, str, np.ndarray]], num_workers: int = 1) -> int:
    """Run label conversions with progress, in ``num_workers`` processes when > 1. Returns how many were written."""
    if num_workers <= 1:
        return sum(track(map(_convert_task, tasks), len(tasks), "converting", "label"))
    with Pool(num_workers) as pool:
        return sum(track(pool.imap_unordered(_convert_task, tasks, chunksize=16), len(tasks), "converting", "label"))


def cityscapes_tasks(root: str) -> List[Tuple[str, str, np.ndarray]]:
    """Conversions ``gtFine/<split>/<city>/*_gtFine_labelIds.png -> *_gtFine_labelTrainIds.png``."""
    gt = os.path.join(root, "gtFine")
    if not os.path.isdir(gt):
        raise DatasetError(f"{gt} not found: expected <root>/gtFine/<split>/<city>/*{RAW_SUFFIX}.")
    tasks = []
    for split in sorted(e.name for e in os.scandir(gt) if e.is_dir()):
        raw = list_files(os.path.join(gt, split), RAW_SUFFIX, subfolders=True)
        for key in sorted(raw):
            dst = raw[key][: -len(RAW_SUFFIX)] + LABEL_SUFFIX
            tasks.append((raw[key], dst, CITYSCAPES_LUT))
    if not tasks:
        raise DatasetError(f"no *{RAW_SUFFIX} files under {gt}/<split>/<city>/.")
    return tasks


def cocostuff_tasks(root: str, splits: Sequence[str] = ("train2017", "val2017")) -> List[Tuple[str, str, np.ndarray]]:
    """Conversions ``annotations/<split>/<name>.png -> <name>_labelTrainIds.png`` (182 -> 171 ids)."""
    tasks = []
    for split in splits:
        folder = os.path.join(root, "annotations", split)
        if not os.path.isdir(folder):
            raise DatasetError(
                f"{folder} not found: expected <root>/annotations/{split}/*.png from stuffthingmaps_trainval2017.zip."
            )
        raw = list_files(folder, ".png")
        for key in sorted(raw):
            if key.endswith(COCO_LABEL_SUFFIX[:-4]):  # an output of a previous run
                continue
            tasks.append((raw[key], os.path.join(folder, key + COCO_LABEL_SUFFIX), COCOSTUFF_LUT))
    if not tasks:
        raise DatasetError(f"no stuffthingmaps PNGs under {root}/annotations/{{{','.join(splits)}}}/.")
    return tasks


def find_pairs(
    root: str, image_dir: str, label_dir: str, image_suffix: str, label_suffix: str
) -> List[Tuple[str, str]]:
    """``(image, label)`` paths relative to ``root``, paired by file stem (recursively)."""
    pairs_by_key: Dict[str, List[Optional[str]]] = {}
    for which, folder, suffix in ((0, image_dir, image_suffix), (1, label_dir, label_suffix)):
        base = os.path.join(root, folder)
        if not os.path.isdir(base):
            raise DatasetError(f"{base} not found: expected <root>/{folder}/**/*{suffix}.")
        for dirpath, _, names in os.walk(base):
            for name in names:
                if name.endswith(suffix):
                    rel = os.path.relpath(os.path.join(dirpath, name), base)
                    key = rel[: -len(suffix)]
                    pairs_by_key.setdefault(key, [None, None])[which] = os.path.join(folder, rel)
    missing = sorted(k for k, (img, lab) in pairs_by_key.items() if lab is None)
    extra = sorted(k for k, (img, lab) in pairs_by_key.items() if img is None)
    if missing or extra:
        raise DatasetError(
            f"images and labels do not pair up under {root}: {len(missing)} image(s) without label "
            f"(e.g. {[pairs_by_key[k][0] for k in missing[:5]]}), {len(extra)} label(s) without image "
            f"(e.g. {[pairs_by_key[k][1] for k in extra[:5]]})."
        )
    return [(img, lab) for _, (img, lab) in sorted(pairs_by_key.items())]


def split_pairs(
    pairs: Sequence[Tuple[str, str]], fractions: Sequence[float], seed: int = 0
) -> List[List[Tuple[str, str]]]:
    """Shuffle ``pairs`` with ``seed`` and cut them into parts of the given ``fractions`` (sum 1)."""
    if any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"split fractions must be >= 0 and sum to 1, got {list(fractions)}")
    order = list(pairs)
    random.Random(seed).shuffle(order)
    bounds = np.round(np.cumsum([0.0, *fractions]) * len(order)).astype(int)
    return [order[bounds[i] : bounds[i + 1]] for i in range(len(fractions))]


def write_file_list(path: str, pairs: Sequence[Tuple[str, str]], separator: str = " ") -> None:
    """Write ``image<sep>label`` lines (the generic ``Dataset`` format)."""
    for img, lab in pairs:
        if separator in img or separator in lab:
            raise DatasetError(f"path {img!r} or {lab!r} contains the separator {separator!r}; choose another.")
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(f"{img}{separator}{lab}\n" for img, lab in pairs)
