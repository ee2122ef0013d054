"""Cityscapes (https://www.cityscapes-dataset.com/): 19 classes, 255 ignored.

Layout (official)::

    <dataset_root>/leftImg8bit/{train,val,test}/<city>/<stem>_leftImg8bit.png
    <dataset_root>/gtFine/{train,val,test}/<city>/<stem>_gtFine_labelTrainIds.png

The ``*_labelTrainIds.png`` files are made from the official ``*_labelIds.png`` by
``tools/data/convert_cityscapes.py`` using ``LABEL_ID_TO_TRAIN_ID`` (the table of the
cityscapesScripts ``labels.py``). Images and labels are paired by their shared stem.
The test split's labels are placeholders, so ``mode: test`` returns images only.
"""

import os

from segkit.datasets.base import SegDataset, Transforms, list_files, pair_files, require_dir
from segkit.errors import DatasetError
from segkit.registry import DATASETS

CLASS_NAMES = [
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
]  # fmt: skip

PALETTE = [
    [128, 64, 128], [244, 35, 232], [70, 70, 70], [102, 102, 156], [190, 153, 153],
    [153, 153, 153], [250, 170, 30], [220, 220, 0], [107, 142, 35], [152, 251, 152],
    [70, 130, 180], [220, 20, 60], [255, 0, 0], [0, 0, 142], [0, 0, 70], [0, 60, 100],
    [0, 80, 100], [0, 0, 230], [119, 11, 32],
]  # fmt: skip

# labelId -> trainId for the ids that are trained on; every other id (0-6 void/flat-void,
# parking 9, rail track 10, guard rail 14, bridge 15, tunnel 16, polegroup 18, caravan 29,
# trailer 30 and anything above 33) maps to the ignore index 255.
LABEL_ID_TO_TRAIN_ID = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
    25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}  # fmt: skip

IMG_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelTrainIds.png"
RAW_SUFFIX = "_gtFine_labelIds.png"


@DATASETS.register
class Cityscapes(SegDataset):
    """Cityscapes fine annotations, 19 classes (PaddleSeg-compatible keywords).

    Args:
        transforms: transform configs or objects.
        dataset_root: the folder holding ``leftImg8bit/`` and ``gtFine/``.
        mode: ``train``, ``val`` or ``test`` (images only).
        edge: also return a class-boundary mask in train mode.
    """

    NUM_CLASSES = 19
    IGNORE_INDEX = 255
    CLASS_NAMES = CLASS_NAMES
    PALETTE = PALETTE

    def __init__(self, transforms: Transforms, dataset_root: str, mode: str = "train", edge: bool = False):
        self._setup(mode, transforms, self.NUM_CLASSES, self.IGNORE_INDEX, 3, edge)
        self.dataset_root = dataset_root
        layout = f"leftImg8bit/{self.mode}/<city>/*{IMG_SUFFIX} and gtFine/{self.mode}/<city>/*{LABEL_SUFFIX}"
        require_dir(dataset_root or "", "Cityscapes", layout)
        img_dir = require_dir(os.path.join(dataset_root, "leftImg8bit", self.mode), "Cityscapes", layout)
        images = list_files(img_dir, IMG_SUFFIX, subfolders=True)
        if self.mode == "test":
            if not images:
                raise DatasetError(f"Cityscapes: no images *{IMG_SUFFIX} under {img_dir}/<city>/.")
            self.file_list = [(images[k], None) for k in sorted(images)]
            return
        label_dir = require_dir(os.path.join(dataset_root, "gtFine", self.mode), "Cityscapes", layout)
        labels = list_files(label_dir, LABEL_SUFFIX, subfolders=True)
        if images and not labels and list_files(label_dir, RAW_SUFFIX, subfolders=True):
            raise DatasetError(
                f"Cityscapes: {label_dir} holds *{RAW_SUFFIX} but no *{LABEL_SUFFIX}; make them with "
                f"python tools/data/convert_cityscapes.py {dataset_root}"
            )
        self.file_list = pair_files(
            images, labels, "Cityscapes", f"{img_dir}/<city>/*{IMG_SUFFIX}", f"{label_dir}/<city>/*{LABEL_SUFFIX}"
        )
