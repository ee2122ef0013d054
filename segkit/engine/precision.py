"""Mixed precision for training: one autocast context, the fp16 loss scaler and the O2 cast.

On CPU Paddle's autocast and loss scaling do nothing, so a run there computes in float32 and says
so; the trainer still skips (and counts) fp16 steps whose loss or gradients are not finite.
"""

import contextlib
from typing import List, Optional

import paddle

from segkit.errors import ConfigError
from segkit.logger import logger

# The initial fp16 loss scale (Paddle's and PaddleSeg's default); the scaler adapts it as it goes.
INITIAL_LOSS_SCALE = 2.0**15


def mixed_precision_available() -> bool:
    """Whether Paddle's autocast and loss scaling act on this device (GPU, XPU or custom, not CPU)."""
    return not paddle.get_device().startswith("cpu")


def gradients_finite(parameters: List[paddle.Tensor]) -> bool:
    """True when no gradient holds a NaN or an Inf (one device sync for all of them)."""
    checks = [paddle.isfinite(p.grad).all() for p in parameters if p.grad is not None]
    return bool(paddle.stack(checks).all()) if checks else True


class Precision:
    """The numeric precision of a run (``--precision``, ``--amp_level``).

    Args:
        precision: ``fp32``, ``fp16`` or ``bf16``.
        level: ``O1`` (autocast) or ``O2`` (half-precision weights with float32 master weights).
    """

    def __init__(self, precision: str, level: str):
        self.precision = precision
        self.level = level
        self.active = precision != "fp32" and mixed_precision_available()
        self.check()

    @property
    def dtype(self) -> str:
        """Paddle's name of the half-precision type."""
        return "float16" if self.precision == "fp16" else "bfloat16"

    def check(self) -> None:
        """Say what ``--precision`` will do here: half precision on a device, float32 on CPU."""
        if self.precision == "fp32":
            return
        if not self.active:
            skipping = " (steps whose gradients are not finite are still skipped and counted)"
            logger.warning(
                f"--precision {self.precision}: Paddle's mixed precision acts on GPU, XPU and custom devices "
                f"only; this run is on {paddle.get_device()}, so it computes in float32"
                f"{skipping if self.precision == 'fp16' else ''}."
            )
        elif self.precision == "bf16" and not paddle.amp.is_bfloat16_supported():
            raise ConfigError(
                f"--precision bf16: {paddle.get_device()} has no bfloat16 support (it needs e.g. an A100, H100 or "
                "newer GPU); use --precision fp16."
            )

    def autocast(self):
        """The mixed-precision context for a forward pass (a no-op in fp32 and on CPU)."""
        if not self.active:
            return contextlib.nullcontext()
        return paddle.amp.auto_cast(level=self.level, dtype=self.dtype)

    def loss_scaler(self) -> Optional[paddle.amp.GradScaler]:
        """fp16's dynamic loss scaler (disabled, but still present, where autocast does nothing); else None."""
        if self.precision != "fp16":
            return None
        return paddle.amp.GradScaler(enable=self.active, init_loss_scaling=INITIAL_LOSS_SCALE)

    def decorate(self, model, optimizer):
        """With O2, cast the model to half precision (float32 master weights, float32 checkpoints)."""
        if not (self.active and self.level == "O2"):
            return model, optimizer
        return paddle.amp.decorate(model, optimizer, level="O2", dtype=self.dtype, save_dtype="float32")
