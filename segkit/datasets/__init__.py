"""Datasets: the generic file-list ``Dataset``, the four benchmarks and the embedded synthetic set.

Importing this package registers every dataset class in ``segkit.registry.DATASETS``.
"""

from segkit.datasets import embedded  # noqa: F401  (registers the embedded synthetic dataset)
from segkit.datasets.ade20k import ADE20K
from segkit.datasets.base import Dataset, SegDataset, default_palette
from segkit.datasets.camvid import CamVid
from segkit.datasets.cityscapes import Cityscapes
from segkit.datasets.cocostuff import COCOStuff

__all__ = ["ADE20K", "COCOStuff", "CamVid", "Cityscapes", "Dataset", "SegDataset", "default_palette"]
