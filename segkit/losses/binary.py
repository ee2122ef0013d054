"""Losses on independent per-channel sigmoids, as PaddleSeg 2.8 defines them: BCE and focal loss.

Written from PaddleSeg's ``binary_cross_entropy_loss.py`` and ``focal_loss.py`` (Apache-2.0);
parity is tested against ``paddleseg==2.8.0``. Pixels labelled ``ignore_index`` carry no loss.
One deliberate difference: with ``weight`` or ``pos_weight`` set to ``dynamic``, PaddleSeg counts
ignored pixels as negatives when it balances the classes; here only labelled pixels are counted.
"""

from typing import Optional, Union

import paddle
import paddle.nn.functional as F
from paddle import nn

from segkit.errors import ConfigError
from segkit.registry import LOSSES

EPS = 1e-10


def _dynamic_or_number(value, name: str):
    """Check a ``weight`` / ``pos_weight`` argument: None, 'dynamic' or (pos_weight only) a number."""
    if value is None or value == "dynamic" or (name == "pos_weight" and isinstance(value, (int, float))):
        return value
    allowed = "'dynamic' or a number" if name == "pos_weight" else "'dynamic'"
    raise ConfigError(f"BCELoss.{name}: expected {allowed} (or nothing), got {value!r}.")


@LOSSES.register
class BCELoss(nn.Layer):
    """Binary cross-entropy on sigmoid outputs, averaged over labelled pixels.

    With one output channel (binary segmentation) the label is the target itself (0 or 1); with
    C channels the label is one-hot encoded into C independent targets.

    Args:
        weight: 'dynamic' weighs positives by 2 * negatives / all and negatives by 2 * positives / all.
        pos_weight: a weight on positive targets, or 'dynamic' (2 * negatives / all).
        ignore_index: label value that carries no loss.
        edge_label: kept for PaddleSeg configs; only false (segkit's datasets give no edge labels).
    """

    def __init__(self, weight: Optional[str] = None, pos_weight: Union[None, str, float] = None,
                 ignore_index: int = 255, edge_label: bool = False):
        super().__init__()
        if edge_label:
            raise ConfigError("BCELoss.edge_label: segkit's datasets give no edge labels; remove edge_label.")
        self.weight = _dynamic_or_number(weight, "weight")
        self.pos_weight = _dynamic_or_number(pos_weight, "pos_weight")
        self.ignore_index = ignore_index

    def forward(self, logits: paddle.Tensor, label: paddle.Tensor) -> paddle.Tensor:
        """Mean loss of ``logits`` [N, C, H, W] against ``label`` [N, H, W]."""
        logits = logits.astype("float32")
        label = label.astype("int64").unsqueeze(1)
        valid = label != self.ignore_index
        target = paddle.where(valid, label, paddle.zeros_like(label))
        mask = valid.astype("float32")
        if logits.shape[1] != 1:
            target = F.one_hot(target.squeeze(1), logits.shape[1]).transpose([0, 3, 1, 2])
        target = target.astype("float32")
        positives = (target * mask).sum()
        negatives = ((1 - target) * mask).sum()
        labelled = positives + negatives + EPS
        weight = pos_weight = None
        if self.weight == "dynamic":
            weight = 2 * negatives / labelled * target + 2 * positives / labelled * (1 - target)
        if self.pos_weight == "dynamic":
            pos_weight = 2 * negatives / labelled
        elif self.pos_weight is not None:
            pos_weight = paddle.to_tensor(float(self.pos_weight))
        loss = F.binary_cross_entropy_with_logits(logits, target, weight=weight, reduction="none", pos_weight=pos_weight)
        return (loss * mask).mean() / (mask.mean() + EPS)


@LOSSES.register
class FocalLoss(nn.Layer):
    """Sigmoid focal loss for two-class segmentation (two output channels), as PaddleSeg.

    Each of the two channels is a sigmoid against the one-hot label; the sum over labelled
    pixels and both channels is divided by twice the number of labelled pixels.

    Args:
        alpha: weight of positive targets (1 - alpha for negatives).
        gamma: focusing exponent.
        ignore_index: label value that carries no loss.
    """

    def __init__(self, alpha: float = 0.25, gamma: float = 2.0, ignore_index: int = 255):
        super().__init__()
        self.alpha = alpha
        self.gamma = gamma
        self.ignore_index = ignore_index

    def forward(self, logits: paddle.Tensor, label: paddle.Tensor) -> paddle.Tensor:
        """Mean loss of ``logits`` [N, 2, H, W] against ``label`` [N, H, W] with values 0 and 1."""
        if logits.shape[1] != 2:
            raise ConfigError(f"FocalLoss needs a model with 2 output channels (binary segmentation), got "
                              f"{logits.shape[1]}; use it with num_classes: 2.")
        label = label.astype("int64")
        valid = label != self.ignore_index
        target = F.one_hot(paddle.where(valid, label, paddle.zeros_like(label)), 2).astype("float32")
        mask = valid.astype("float32").unsqueeze(3)
        loss = F.sigmoid_focal_loss(logits.astype("float32").transpose([0, 2, 3, 1]), target, alpha=self.alpha,
                                    gamma=self.gamma, reduction="none")
        return (loss * mask).sum() / (mask.sum() * 2 + EPS)
