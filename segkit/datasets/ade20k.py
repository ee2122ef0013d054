"""ADE20K scene parsing (ADEChallengeData2016, http://sceneparsing.csail.mit.edu/): 150 classes.

Layout (official)::

    <dataset_root>/images/{training,validation}/<name>.jpg
    <dataset_root>/annotations/{training,validation}/<name>.png

In the annotations 0 means "other objects" and 1-150 are the classes; loading applies the usual
reduce-zero-label mapping (0 -> 255 ignored, k -> k - 1) so training ids are 0-149. Class names
and the palette are the ones used by the benchmark toolkits (mmsegmentation, PaddleSeg).
``dataset_root`` may be omitted in PaddleSeg, which then downloads the data; segkit never
downloads and asks for the folder instead.
"""

import os
from typing import Optional

import numpy as np

from segkit.datasets.base import SegDataset, Transforms, list_files, pair_files, require_dir
from segkit.errors import DatasetError
from segkit.registry import DATASETS

CLASS_NAMES = [
    'wall', 'building', 'sky', 'floor', 'tree', 'ceiling', 'road', 'bed', 'windowpane', 'grass',
    'cabinet', 'sidewalk', 'person', 'earth', 'door', 'table', 'mountain', 'plant', 'curtain',
    'chair', 'car', 'water', 'painting', 'sofa', 'shelf', 'house', 'sea', 'mirror', 'rug',
    'field', 'armchair', 'seat', 'fence', 'desk', 'rock', 'wardrobe', 'lamp', 'bathtub',
    'railing', 'cushion', 'base', 'box', 'column', 'signboard', 'chest of drawers', 'counter',
    'sand', 'sink', 'skyscraper', 'fireplace', 'refrigerator', 'grandstand', 'path', 'stairs',
    'runway', 'case', 'pool table', 'pillow', 'screen door', 'stairway', 'river', 'bridge',
    'bookcase', 'blind', 'coffee table', 'toilet', 'flower', 'book', 'hill', 'bench',
    'countertop', 'stove', 'palm', 'kitchen island', 'computer', 'swivel chair', 'boat', 'bar',
    'arcade machine', 'hovel', 'bus', 'towel', 'light', 'truck', 'tower', 'chandelier',
    'awning', 'streetlight', 'booth', 'television receiver', 'airplane', 'dirt track',
    'apparel', 'pole', 'land', 'bannister', 'escalator', 'ottoman', 'bottle', 'buffet',
    'poster', 'stage', 'van', 'ship', 'fountain', 'conveyer belt', 'canopy', 'washer',
    'plaything', 'swimming pool', 'stool', 'barrel', 'basket', 'waterfall', 'tent', 'bag',
    'minibike', 'cradle', 'oven', 'ball', 'food', 'step', 'tank', 'trade name', 'microwave',
    'pot', 'animal', 'bicycle', 'lake', 'dishwasher', 'screen', 'blanket', 'sculpture', 'hood',
    'sconce', 'vase', 'traffic light', 'tray', 'ashcan', 'fan', 'pier', 'crt screen', 'plate',
    'monitor', 'bulletin board', 'shower', 'radiator', 'glass', 'clock', 'flag'
]

PALETTE = [
    [120, 120, 120], [180, 120, 120], [6, 230, 230], [80, 50, 50], [4, 200, 3], [120, 120, 80],
    [140, 140, 140], [204, 5, 255], [230, 230, 230], [4, 250, 7], [224, 5, 255], [235, 255, 7],
    [150, 5, 61], [120, 120, 70], [8, 255, 51], [255, 6, 82], [143, 255, 140], [204, 255, 4],
    [255, 51, 7], [204, 70, 3], [0, 102, 200], [61, 230, 250], [255, 6, 51], [11, 102, 255],
    [255, 7, 71], [255, 9, 224], [9, 7, 230], [220, 220, 220], [255, 9, 92], [112, 9, 255], [8,
    255, 214], [7, 255, 224], [255, 184, 6], [10, 255, 71], [255, 41, 10], [7, 255, 255], [224,
    255, 8], [102, 8, 255], [255, 61, 6], [255, 194, 7], [255, 122, 8], [0, 255, 20], [255, 8,
    41], [255, 5, 153], [6, 51, 255], [235, 12, 255], [160, 150, 20], [0, 163, 255], [140, 140,
    140], [250, 10, 15], [20, 255, 0], [31, 255, 0], [255, 31, 0], [255, 224, 0], [153, 255, 0],
    [0, 0, 255], [255, 71, 0], [0, 235, 255], [0, 173, 255], [31, 0, 255], [11, 200, 200], [255,
    82, 0], [0, 255, 245], [0, 61, 255], [0, 255, 112], [0, 255, 133], [255, 0, 0], [255, 163,
    0], [255, 102, 0], [194, 255, 0], [0, 143, 255], [51, 255, 0], [0, 82, 255], [0, 255, 41],
    [0, 255, 173], [10, 0, 255], [173, 255, 0], [0, 255, 153], [255, 92, 0], [255, 0, 255],
    [255, 0, 245], [255, 0, 102], [255, 173, 0], [255, 0, 20], [255, 184, 184], [0, 31, 255],
    [0, 255, 61], [0, 71, 255], [255, 0, 204], [0, 255, 194], [0, 255, 82], [0, 10, 255], [0,
    112, 255], [51, 0, 255], [0, 194, 255], [0, 122, 255], [0, 255, 163], [255, 153, 0], [0,
    255, 10], [255, 112, 0], [143, 255, 0], [82, 0, 255], [163, 255, 0], [255, 235, 0], [8, 184,
    170], [133, 0, 255], [0, 255, 92], [184, 0, 255], [255, 0, 31], [0, 184, 255], [0, 214,
    255], [255, 0, 112], [92, 255, 0], [0, 224, 255], [112, 224, 255], [70, 184, 160], [163, 0,
    255], [153, 0, 255], [71, 255, 0], [255, 0, 163], [255, 204, 0], [255, 0, 143], [0, 255,
    235], [133, 255, 0], [255, 0, 235], [245, 0, 255], [255, 0, 122], [255, 245, 0], [10, 190,
    212], [214, 255, 0], [0, 204, 255], [20, 0, 255], [255, 255, 0], [0, 153, 255], [0, 41,
    255], [0, 255, 204], [41, 0, 255], [41, 255, 0], [173, 0, 255], [0, 245, 255], [71, 0, 255],
    [122, 0, 255], [0, 255, 184], [0, 92, 255], [184, 255, 0], [0, 133, 255], [255, 214, 0],
    [25, 194, 194], [102, 255, 0], [92, 0, 255]
]

SPLITS = {"train": "training", "val": "validation"}

# reduce zero label as a lookup table: 0 -> 255, k -> k - 1 (uint8 wrap-around does the same)
REDUCE_ZERO_LUT = ((np.arange(256) - 1) % 256).astype(np.uint8)


@DATASETS.register
class ADE20K(SegDataset):
    """ADE20K (ADEChallengeData2016), 150 classes, stored id 0 ignored (PaddleSeg-compatible keywords).

    Args:
        transforms: transform configs or objects.
        dataset_root: the ``ADEChallengeData2016`` folder (holding ``images/`` and ``annotations/``).
        mode: ``train`` or ``val``.
        edge: also return a class-boundary mask in train mode.
    """

    NUM_CLASSES = 150
    IGNORE_INDEX = 255
    CLASS_NAMES = CLASS_NAMES
    PALETTE = PALETTE

    def __init__(
        self, transforms: Transforms, dataset_root: Optional[str] = None, mode: str = "train", edge: bool = False
    ):
        self._setup(mode, transforms, self.NUM_CLASSES, self.IGNORE_INDEX, 3, edge)
        if self.mode not in SPLITS:
            raise DatasetError("ADE20K: mode must be 'train' or 'val' (the test split has no labels).")
        split = SPLITS[self.mode]
        layout = f"images/{split}/*.jpg and annotations/{split}/*.png under ADEChallengeData2016/"
        if not dataset_root:
            raise DatasetError(
                "ADE20K: dataset_root is not set. segkit never downloads datasets: get "
                "ADEChallengeData2016.zip from http://sceneparsing.csail.mit.edu/, unzip it and set "
                "dataset_root to the ADEChallengeData2016 folder."
            )
        nested = os.path.join(dataset_root, "ADEChallengeData2016")
        if not os.path.isdir(os.path.join(dataset_root, "images")) and os.path.isdir(nested):
            raise DatasetError(
                f"ADE20K: dataset_root {dataset_root!r} holds ADEChallengeData2016/; set dataset_root to {nested!r}."
            )
        self.dataset_root = dataset_root
        require_dir(dataset_root, "ADE20K", layout)
        img_dir = require_dir(os.path.join(dataset_root, "images", split), "ADE20K", layout)
        label_dir = require_dir(os.path.join(dataset_root, "annotations", split), "ADE20K", layout)
        self.file_list = pair_files(
            list_files(img_dir, ".jpg"), list_files(label_dir, ".png"), "ADE20K",
            f"{img_dir}/*.jpg", f"{label_dir}/*.png",
        )  # fmt: skip

    def map_label(self, label: np.ndarray) -> np.ndarray:
        """Reduce zero label: 0 -> 255 (ignored), k -> k - 1."""
        if label.dtype == np.uint8:
            return REDUCE_ZERO_LUT[label]
        label = label.astype(np.int64) - 1
        label[label < 0] = self.IGNORE_INDEX
        return label
