"""Losses, registered by PaddleSeg's names, and the multi-output wrapper."""

from segkit.losses.binary import BCELoss, FocalLoss  # noqa: F401
from segkit.losses.cross_entropy import BootstrappedCrossEntropyLoss, CrossEntropyLoss, OhemCrossEntropyLoss  # noqa: F401
from segkit.losses.multi import MixedLoss, MultiLoss  # noqa: F401
from segkit.losses.region import DiceLoss, LovaszSoftmaxLoss  # noqa: F401
