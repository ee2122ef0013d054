"""Exponential moving average of model weights."""

import contextlib
from typing import Dict

import paddle
from paddle import nn

FLOATING = (paddle.float16, paddle.bfloat16, paddle.float32, paddle.float64)


def _live_tensors(model: nn.Layer) -> Dict[str, paddle.Tensor]:
    """The model's parameters and buffers by state-dict name, as they are (``state_dict()`` may run
    hooks, e.g. the float32 cast that ``paddle.amp.decorate(save_dtype=...)`` adds)."""
    tensors = dict(model.named_buffers())
    tensors.update(model.named_parameters())
    return tensors


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
        live = _live_tensors(model)
        for key, average in self.shadow.items():
            self.shadow[key] = self.decay * average + (1.0 - self.decay) * live[key].astype("float32")

    def state_dict(self) -> Dict[str, paddle.Tensor]:
        """The averaged weights, in the model's key names (loadable as a model checkpoint)."""
        return dict(self.shadow)

    def set_state_dict(self, state: Dict[str, paddle.Tensor]) -> None:
        """Restore the average from a checkpoint."""
        for key in self.shadow:
            self.shadow[key] = paddle.to_tensor(state[key]).astype("float32")

    @contextlib.contextmanager
    def applied(self, model: nn.Layer):
        """Temporarily load the averaged weights into ``model`` (for evaluation), each in its own dtype."""
        live = _live_tensors(model)
        backup = {k: live[k].detach().clone() for k in self.shadow}
        with paddle.no_grad():
            for key, average in self.shadow.items():
                live[key].set_value(average.astype(live[key].dtype))
        try:
            yield model
        finally:
            with paddle.no_grad():
                for key, value in backup.items():
                    live[key].set_value(value)
