"""COCO-Stuff 164k (https://github.com/nightrome/cocostuff): 171 classes, 255 ignored.

Layout::

    <dataset_root>/images/{train2017,val2017}/<name>.jpg
    <dataset_root>/annotations/{train2017,val2017}/<name>_labelTrainIds.png   (converted)
    <dataset_root>/annotations/{train2017,val2017}/<name>.png                 (stuffthingmaps)

The official ``stuffthingmaps_trainval2017`` PNGs hold 182 ids (0-181: 80 things with the gaps
of the 91 COCO thing ids, then 91 stuff classes) and 255 for unlabelled.
``tools/data/convert_cocostuff.py`` maps them to 171 contiguous ids with
``STUFFTHING_ID_TO_TRAIN_ID`` and writes ``<name>_labelTrainIds.png`` next to them (the
mmsegmentation naming). When ``*_labelTrainIds.png`` exist they are used; otherwise the
``<name>.png`` files must already hold 0-170 (PaddleSeg's layout) and a label with raw ids is
reported with the command that converts it. Class names and palette follow mmsegmentation.
"""

import os
from typing import Optional, Tuple

import numpy as np

from segkit.datasets.base import SegDataset, Transforms, list_files, pair_files, require_dir
from segkit.errors import DatasetError
from segkit.registry import DATASETS

CLASS_NAMES = [
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat",
    "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack",
    "umbrella", "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball",
    "kite", "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket",
    "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair",
    "couch", "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote",
    "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book",
    "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush", "banner", "blanket",
    "branch", "bridge", "building-other", "bush", "cabinet", "cage", "cardboard", "carpet",
    "ceiling-other", "ceiling-tile", "cloth", "clothes", "clouds", "counter", "cupboard",
    "curtain", "desk-stuff", "dirt", "door-stuff", "fence", "floor-marble", "floor-other",
    "floor-stone", "floor-tile", "floor-wood", "flower", "fog", "food-other", "fruit",
    "furniture-other", "grass", "gravel", "ground-other", "hill", "house", "leaves", "light",
    "mat", "metal", "mirror-stuff", "moss", "mountain", "mud", "napkin", "net", "paper",
    "pavement", "pillow", "plant-other", "plastic", "platform", "playingfield", "railing",
    "railroad", "river", "road", "rock", "roof", "rug", "salad", "sand", "sea", "shelf",
    "sky-other", "skyscraper", "snow", "solid-other", "stairs", "stone", "straw",
    "structural-other", "table", "tent", "textile-other", "towel", "tree", "vegetable",
    "wall-brick", "wall-concrete", "wall-other", "wall-panel", "wall-stone", "wall-tile",
    "wall-wood", "water-other", "waterdrops", "window-blind", "window-other", "wood"
]

PALETTE = [
    [0, 192, 64], [0, 192, 64], [0, 64, 96], [128, 192, 192], [0, 64, 64], [0, 192, 224], [0,
    192, 192], [128, 192, 64], [0, 192, 96], [128, 192, 64], [128, 32, 192], [0, 0, 224], [0, 0,
    64], [0, 160, 192], [128, 0, 96], [128, 0, 192], [0, 32, 192], [128, 128, 224], [0, 0, 192],
    [128, 160, 192], [128, 128, 0], [128, 0, 32], [128, 32, 0], [128, 0, 128], [64, 128, 32],
    [0, 160, 0], [0, 0, 0], [192, 128, 160], [0, 32, 0], [0, 128, 128], [64, 128, 160], [128,
    160, 0], [0, 128, 0], [192, 128, 32], [128, 96, 128], [0, 0, 128], [64, 0, 32], [0, 224,
    128], [128, 0, 0], [192, 0, 160], [0, 96, 128], [128, 128, 128], [64, 0, 160], [128, 224,
    128], [128, 128, 64], [192, 0, 32], [128, 96, 0], [128, 0, 192], [0, 128, 32], [64, 224, 0],
    [0, 0, 64], [128, 128, 160], [64, 96, 0], [0, 128, 192], [0, 128, 160], [192, 224, 0], [0,
    128, 64], [128, 128, 32], [192, 32, 128], [0, 64, 192], [0, 0, 32], [64, 160, 128], [128,
    64, 64], [128, 0, 160], [64, 32, 128], [128, 192, 192], [0, 0, 160], [192, 160, 128], [128,
    192, 0], [128, 0, 96], [192, 32, 0], [128, 64, 128], [64, 128, 96], [64, 160, 0], [0, 64,
    0], [192, 128, 224], [64, 32, 0], [0, 192, 128], [64, 128, 224], [192, 160, 0], [0, 192, 0],
    [192, 128, 96], [192, 96, 128], [0, 64, 128], [64, 0, 96], [64, 224, 128], [128, 64, 0],
    [192, 0, 224], [64, 96, 128], [128, 192, 128], [64, 0, 224], [192, 224, 128], [128, 192,
    64], [192, 0, 96], [192, 96, 0], [128, 64, 192], [0, 128, 96], [0, 224, 0], [64, 64, 64],
    [128, 128, 224], [0, 96, 0], [64, 192, 192], [0, 128, 224], [128, 224, 0], [64, 192, 64],
    [128, 128, 96], [128, 32, 128], [64, 0, 192], [0, 64, 96], [0, 160, 128], [192, 0, 64],
    [128, 64, 224], [0, 32, 128], [192, 128, 192], [0, 64, 224], [128, 160, 128], [192, 128, 0],
    [128, 64, 32], [128, 32, 64], [192, 0, 128], [64, 192, 32], [0, 160, 64], [64, 0, 0], [192,
    192, 160], [0, 32, 64], [64, 128, 128], [64, 192, 160], [128, 160, 64], [64, 128, 0], [192,
    192, 32], [128, 96, 192], [64, 0, 128], [64, 64, 32], [0, 224, 192], [192, 0, 0], [192, 64,
    160], [0, 96, 192], [192, 128, 128], [64, 64, 160], [128, 224, 192], [192, 128, 64], [192,
    64, 32], [128, 96, 64], [192, 0, 192], [0, 192, 32], [64, 224, 64], [64, 0, 64], [128, 192,
    160], [64, 96, 64], [64, 128, 192], [0, 192, 160], [192, 224, 64], [64, 128, 64], [128, 192,
    32], [192, 32, 192], [64, 64, 192], [0, 64, 32], [64, 160, 192], [192, 64, 64], [128, 64,
    160], [64, 32, 192], [192, 192, 192], [0, 64, 160], [192, 160, 192], [192, 192, 0], [128,
    64, 96], [192, 32, 64], [192, 64, 128], [64, 192, 96], [64, 160, 64], [64, 64, 0]
]

# The 11 COCO thing ids (0-based) that have no category; the other 171 of 0-181 keep their order.
UNUSED_STUFFTHING_IDS = (11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90)
STUFFTHING_ID_TO_TRAIN_ID = {
    sid: tid for tid, sid in enumerate(i for i in range(182) if i not in UNUSED_STUFFTHING_IDS)
}

SPLITS = {"train": "train2017", "val": "val2017"}
LABEL_SUFFIX = "_labelTrainIds.png"


@DATASETS.register
class COCOStuff(SegDataset):
    """COCO-Stuff 164k, 171 classes (PaddleSeg's ``CocoStuff`` keywords; also registered under that name).

    Args:
        transforms: transform configs or objects.
        dataset_root: the folder holding ``images/`` and ``annotations/``.
        mode: ``train`` or ``val``.
        edge: also return a class-boundary mask in train mode.
    """

    NUM_CLASSES = 171
    IGNORE_INDEX = 255
    CLASS_NAMES = CLASS_NAMES
    PALETTE = PALETTE

    def __init__(self, transforms: Transforms, dataset_root: str, mode: str = "train", edge: bool = False):
        self._setup(mode, transforms, self.NUM_CLASSES, self.IGNORE_INDEX, 3, edge)
        if self.mode not in SPLITS:
            raise DatasetError("COCOStuff: mode must be 'train' or 'val' (the test split has no labels).")
        split = SPLITS[self.mode]
        layout = f"images/{split}/*.jpg and annotations/{split}/*{LABEL_SUFFIX} (or *.png)"
        self.dataset_root = dataset_root
        require_dir(dataset_root or "", "COCOStuff", layout)
        img_dir = require_dir(os.path.join(dataset_root, "images", split), "COCOStuff", layout)
        label_dir = require_dir(os.path.join(dataset_root, "annotations", split), "COCOStuff", layout)
        labels = list_files(label_dir, LABEL_SUFFIX)
        suffix = LABEL_SUFFIX
        if not labels:
            suffix = ".png"
            labels = list_files(label_dir, ".png")
        self.converted = suffix == LABEL_SUFFIX
        self.file_list = pair_files(
            list_files(img_dir, ".jpg"), labels, "COCOStuff", f"{img_dir}/*.jpg", f"{label_dir}/*{suffix}"
        )

    def load_label(self, path: str, image_size: Optional[Tuple[int, int]] = None) -> np.ndarray:
        """Load a label; raw 182-id stuffthingmaps give an error naming the converter."""
        try:
            return super().load_label(path, image_size)
        except DatasetError as err:
            if self.converted or "outside" not in str(err):
                raise
            raise DatasetError(
                f"{err} These look like raw stuffthingmaps (182 ids): convert them with "
                f"python tools/data/convert_cocostuff.py {self.dataset_root}"
            ) from err


DATASETS.register(COCOStuff, name="CocoStuff")
