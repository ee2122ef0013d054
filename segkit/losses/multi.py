"""Weighted sum of one loss per model output (main logits first, auxiliaries after)."""

from typing import List, Sequence, Tuple

import paddle

from segkit.errors import ConfigError


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
