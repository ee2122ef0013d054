"""Losses, registered by PaddleSeg's names, and the multi-output wrapper."""

from segkit.losses.cross_entropy import CrossEntropyLoss, OhemCrossEntropyLoss  # noqa: F401
from segkit.losses.multi import MultiLoss  # noqa: F401
