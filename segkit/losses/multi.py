"""Weighted sums of losses: one loss per model output (MultiLoss) and several on one output (MixedLoss)."""

from typing import Annotated, Any, Dict, List, Sequence, Tuple

import paddle
from paddle import nn

from segkit.errors import ConfigError
from segkit.registry import LOSSES, build


class MultiLoss:
    """Applies ``losses[i]`` with weight ``coef[i]`` to the i-th logits of a model.

    Args:
        losses: one loss per model output.
        coef: one weight per model output.
    """

    def __init__(self, losses: Sequence, coef: Sequence[float]):
        self.losses = list(losses)
        self.coef = list(coef)

    def check_outputs(self, num_outputs: int, model_name: str) -> None:
        """Fail before the first step if ``loss.coef`` does not match the model's outputs."""
        if len(self.coef) != num_outputs:
            raise ConfigError(
                f"loss.coef has {len(self.coef)} entries but {model_name} returns {num_outputs} logits in "
                f"training (main first, then auxiliaries); give {num_outputs} coefficients, e.g. "
                f"coef: {[1] + [0.4] * (num_outputs - 1)}.",
                key="loss.coef",
            )

    def __call__(self, logits: List[paddle.Tensor], label: paddle.Tensor) -> Tuple[paddle.Tensor, List[paddle.Tensor]]:
        """Return the weighted total and the unweighted loss of each output."""
        parts = [loss(logit, label) for loss, logit in zip(self.losses, logits)]
        total = paddle.add_n([c * p for c, p in zip(self.coef, parts)])
        return total, parts


@LOSSES.register
class MixedLoss(nn.Layer):
    """A weighted sum of several losses on the same logits (PaddleSeg's MixedLoss).

    Used as one entry of ``loss.types``, e.g. ``{type: MixedLoss, losses: [{type: CrossEntropyLoss},
    {type: LovaszSoftmaxLoss}], coef: [0.8, 0.2]}``; the entry's own ``loss.coef`` still applies on top.

    Args:
        losses: the losses, or their configs (each a mapping with a ``type``, built from LOSSES).
        coef: one weight per loss.
    """

    def __init__(self, losses: Annotated[List[nn.Layer], LOSSES], coef: List[float]):
        super().__init__()
        if not isinstance(losses, list) or not isinstance(coef, list) or len(losses) != len(coef) or not losses:
            raise ConfigError(f"MixedLoss: expected non-empty lists 'losses' and 'coef' of the same length, got "
                              f"{len(losses) if isinstance(losses, list) else losses!r} losses and "
                              f"{len(coef) if isinstance(coef, list) else coef!r} coef.")
        self.losses = nn.LayerList([build(item, LOSSES, f"MixedLoss.losses.{i}") for i, item in enumerate(losses)])
        self.coef = [float(c) for c in coef]

    def forward(self, logits: paddle.Tensor, label: paddle.Tensor) -> paddle.Tensor:
        """The weighted sum of every loss of ``logits`` against ``label``."""
        return paddle.add_n([c * loss(logits, label) for c, loss in zip(self.coef, self.losses)])
