"""Overlap losses, as PaddleSeg 2.8 defines them: Dice and Lovasz-Softmax.

Both work on softmax probabilities and skip pixels labelled ``ignore_index``. Written from
PaddleSeg's ``paddleseg/models/losses/dice_loss.py`` and ``lovasz_loss.py`` (Apache-2.0) and the
Lovasz-Softmax paper (Berman et al., CVPR 2018); parity is tested against ``paddleseg==2.8.0``.
One deliberate difference: PaddleSeg's DiceLoss overwrites ignored labels with 0 in the caller's
label tensor, which changes what a later loss of a MixedLoss sees; here the label is not touched.
"""

from typing import List, Optional, Union

import paddle
import paddle.nn.functional as F
from paddle import nn

from segkit.errors import ConfigError
from segkit.registry import LOSSES


def _check_class_weights(weight: Optional[List[float]], num_classes: int, name: str) -> None:
    if weight is not None and len(weight) != num_classes:
        raise ConfigError(f"{name}.weight has {len(weight)} entries but the model predicts {num_classes} classes; "
                          "give one weight per class.")


@LOSSES.register
class DiceLoss(nn.Layer):
    """Soft Dice loss, 1 - (2 |P n Y| + smooth) / (|P| + |Y| + smooth), per image and class.

    Each image's Dice loss is taken per class over its labelled pixels, averaged over the batch,
    weighted by ``weight[c]``, summed over classes and divided by the number of classes.

    Args:
        weight: one weight per class, or None (all 1).
        ignore_index: label value that carries no loss.
        smooth: Laplace smoothing added to numerator and denominator.
    """

    EPS = 1e-8

    def __init__(self, weight: Optional[List[float]] = None, ignore_index: int = 255, smooth: float = 1.0):
        super().__init__()
        self.weight = weight
        self.ignore_index = ignore_index
        self.smooth = smooth

    def forward(self, logits: paddle.Tensor, label: paddle.Tensor) -> paddle.Tensor:
        """Dice loss of ``logits`` [N, C, H, W] against ``label`` [N, H, W]."""
        n, num_classes = logits.shape[:2]
        _check_class_weights(self.weight, num_classes, "DiceLoss")
        label = label.astype("int64")
        valid = (label != self.ignore_index).astype("float32").reshape([n, 1, -1])
        safe = paddle.where(label != self.ignore_index, label, paddle.zeros_like(label))
        target = F.one_hot(safe.reshape([n, -1]), num_classes).transpose([0, 2, 1]) * valid
        prob = F.softmax(logits.astype("float32"), axis=1).reshape([n, num_classes, -1]) * valid
        intersection = (prob * target).sum(axis=2)
        cardinality = (prob + target).sum(axis=2)
        per_class = (1 - (2 * intersection + self.smooth) / (cardinality + self.smooth + self.EPS)).mean(axis=0)
        if self.weight is not None:
            per_class = per_class * paddle.to_tensor(self.weight, dtype="float32")
        return per_class.sum() / num_classes


def lovasz_gradient(sorted_target: paddle.Tensor) -> paddle.Tensor:
    """Gradient of the Lovasz extension of the Jaccard loss for errors sorted in descending order.

    Args:
        sorted_target: 1 where the pixel belongs to the class, 0 elsewhere, in the errors' order.
    """
    total = sorted_target.sum()
    intersection = total - paddle.cumsum(sorted_target, axis=0)
    union = total + paddle.cumsum(1 - sorted_target, axis=0)
    jaccard = 1.0 - intersection / union
    return paddle.concat([jaccard[:1], jaccard[1:] - jaccard[:-1]])


@LOSSES.register
class LovaszSoftmaxLoss(nn.Layer):
    """Multi-class Lovasz-Softmax loss over all labelled pixels of the batch.

    Args:
        ignore_index: label value that carries no loss.
        classes: 'present' (average over classes that occur in the label), 'all', or a list of
            class ids to average over.
    """

    def __init__(self, ignore_index: int = 255, classes: Union[str, List[int]] = "present"):
        super().__init__()
        if not (classes in ("present", "all") or (isinstance(classes, list) and all(isinstance(c, int) for c in classes))):
            raise ConfigError(f"LovaszSoftmaxLoss.classes: expected 'present', 'all' or a list of class ids, got {classes!r}.")
        self.ignore_index = ignore_index
        self.classes = classes

    def forward(self, logits: paddle.Tensor, label: paddle.Tensor) -> paddle.Tensor:
        """Lovasz-Softmax loss of ``logits`` [N, C, H, W] against ``label`` [N, H, W]."""
        num_classes = logits.shape[1]
        prob = F.softmax(logits.astype("float32"), axis=1).transpose([0, 2, 3, 1]).reshape([-1, num_classes])
        label = label.astype("int64").reshape([-1])
        keep = paddle.nonzero(label != self.ignore_index).reshape([-1])
        if keep.shape[0] == 0:
            return logits.sum() * 0.0
        prob, label = paddle.gather(prob, keep), paddle.gather(label, keep)
        classes = range(num_classes) if isinstance(self.classes, str) else self.classes
        losses = []
        for c in classes:
            target = (label == c).astype("float32")
            if self.classes == "present" and not bool(target.sum() > 0):
                continue
            errors = paddle.abs(target - prob[:, c])
            order = paddle.argsort(errors, descending=True)
            sorted_target = paddle.gather(target, order)
            losses.append((paddle.gather(errors, order) * lovasz_gradient(sorted_target).detach()).sum())
        return paddle.stack(losses).mean() if losses else logits.sum() * 0.0
