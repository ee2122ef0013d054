"""CamVid in the SegNet layout: 11 classes, void ignored.

Layout (SegNet tutorial, 960x720 or 480x360)::

    <dataset_root>/{train,val,test}/<name>.png
    <dataset_root>/{trainannot,valannot,testannot}/<name>.png

Annotations hold ids 0-10 for the classes below and 11 for void; void becomes the ignore index
255 when a label is loaded (labels that already use 255 for void load unchanged). ``mode: test``
returns the test labels too, since the test split is the one papers report.
"""

import os

import numpy as np

from segkit.datasets.base import SegDataset, Transforms, list_files, pair_files, require_dir
from segkit.registry import DATASETS

CLASS_NAMES = [
    "Sky", "Building", "Pole", "Road", "Sidewalk", "Tree", "SignSymbol", "Fence", "Car",
    "Pedestrian", "Bicyclist",
]  # fmt: skip

# the SegNet tutorial colours (Road_marking merged into Road, Pavement is Sidewalk)
PALETTE = [
    [128, 128, 128], [128, 0, 0], [192, 192, 128], [128, 64, 128], [60, 40, 222],
    [128, 128, 0], [192, 128, 128], [64, 64, 128], [64, 0, 128], [64, 64, 0], [0, 128, 192],
]  # fmt: skip

VOID_ID = 11


@DATASETS.register
class CamVid(SegDataset):
    """CamVid (SegNet layout), 11 classes; void (11) is ignored as 255.

    Args:
        transforms: transform configs or objects.
        dataset_root: the folder holding ``train/``, ``trainannot/``, ``val/``, ... .
        mode: ``train``, ``val`` or ``test``.
        edge: also return a class-boundary mask in train mode.
    """

    NUM_CLASSES = 11
    IGNORE_INDEX = 255
    CLASS_NAMES = CLASS_NAMES
    PALETTE = PALETTE

    def __init__(self, transforms: Transforms, dataset_root: str, mode: str = "train", edge: bool = False):
        self._setup(mode, transforms, self.NUM_CLASSES, self.IGNORE_INDEX, 3, edge)
        self.dataset_root = dataset_root
        layout = f"{self.mode}/*.png with labels {self.mode}annot/*.png (SegNet layout)"
        require_dir(dataset_root or "", "CamVid", layout)
        img_dir = require_dir(os.path.join(dataset_root, self.mode), "CamVid", layout)
        label_dir = require_dir(os.path.join(dataset_root, self.mode + "annot"), "CamVid", layout)
        self.file_list = pair_files(
            list_files(img_dir, ".png"), list_files(label_dir, ".png"), "CamVid",
            f"{img_dir}/*.png", f"{label_dir}/*.png",
        )  # fmt: skip

    def map_label(self, label: np.ndarray) -> np.ndarray:
        """Void (11) -> 255."""
        label = np.array(label, copy=True)
        label[label == VOID_ID] = self.IGNORE_INDEX
        return label
