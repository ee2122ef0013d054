"""segkit: config-driven semantic segmentation on PaddlePaddle."""

__version__ = "0.1.0"
