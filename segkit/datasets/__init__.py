"""Datasets: the generic file-list ``Dataset``, the four benchmarks and the embedded synthetic set.

Importing this package registers every dataset class in ``segkit.registry.DATASETS``.
"""

from segkit.datasets import embedded  # noqa: F401  (registers the embedded synthetic dataset)
from segkit.datasets.base import Dataset, SegDataset, default_palette

__all__ = ["Dataset", "SegDataset", "default_palette"]
