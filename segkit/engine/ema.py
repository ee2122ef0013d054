"""Exponential moving average of model weights."""

import contextlib
from typing import Dict

import paddle
from paddle import nn

FLOATING = (paddle.float16, paddle.bfloat16, paddle.float32, paddle.float64)


class ModelEMA:
    """Keeps ``ema = decay * ema + (1 - decay) * weights`` for every floating-point tensor of a model.

    Batch-norm statistics are averaged too, so the EMA model can be evaluated as it is. The average
    is kept in float32 even when the model runs in float16 or bfloat16 (``--amp_level O2``), where
    one step's change is often below half precision's resolution.

    Args:
        model: the model whose weights are averaged.
        decay: weight of the running average per step.
    """

    def __init__(self, model: nn.Layer, decay: float = 0.9999):
        self.decay = decay
        self.shadow: Dict[str, paddle.Tensor] = {
            k: v.detach().astype("float32").clone() for k, v in model.state_dict().items() if v.dtype in FLOATING
        }

    @paddle.no_grad()
    def update(self, model: nn.Layer) -> None:
        """Fold the model's current weights into the average."""
        for key, value in model.state_dict().items():
            if key in self.shadow:
                self.shadow[key] = self.decay * self.shadow[key] + (1.0 - self.decay) * value.astype("float32")

    def state_dict(self) -> Dict[str, paddle.Tensor]:
        """The averaged weights, in the model's key names (loadable as a model checkpoint)."""
        return dict(self.shadow)

    def set_state_dict(self, state: Dict[str, paddle.Tensor]) -> None:
        """Restore the average from a checkpoint."""
        for key in self.shadow:
            self.shadow[key] = paddle.to_tensor(state[key]).astype("float32")

    @contextlib.contextmanager
    def applied(self, model: nn.Layer):
        """Temporarily load the averaged weights into ``model`` (for evaluation)."""
        current = {k: v for k, v in model.state_dict().items() if k in self.shadow}
        backup = {k: v.detach().clone() for k, v in current.items()}
        model.set_state_dict({k: self.shadow[k].astype(v.dtype) for k, v in current.items()})
        try:
            yield model
        finally:
            model.set_state_dict(backup)
