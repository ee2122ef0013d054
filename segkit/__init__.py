"""segkit: config-driven semantic segmentation on PaddlePaddle."""

__version__ = "0.1.0"

__all__ = ["Segmenter"]


def __getattr__(name: str):
    """``segkit.Segmenter`` without importing Paddle when ``import segkit`` alone is done."""
    if name == "Segmenter":
        from segkit.segmenter import Segmenter

        return Segmenter
    raise AttributeError(f"module 'segkit' has no attribute {name!r}")
