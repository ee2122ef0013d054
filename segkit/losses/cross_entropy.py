"""Pixel-wise cross-entropy averaged over labelled pixels, and its OHEM and bootstrapped variants."""

from typing import List, Optional

import paddle
import paddle.nn.functional as F
from paddle import nn

from segkit import ops
from segkit.errors import ConfigError
from segkit.models.layers import onednn_applies
from segkit.registry import LOSSES


def _pixel_losses(logits: paddle.Tensor, label: paddle.Tensor, weight: Optional[paddle.Tensor], ignore_index: int):
    """Per-pixel loss [N, H, W] and per-pixel weight (0 on ignored pixels)."""
    if logits.shape[-2:] != label.shape[-2:]:
        raise ValueError(f"logits {logits.shape[-2:]} and label {label.shape[-2:]} differ in size")
    label = label.astype("int64")
    valid = label != ignore_index
    safe_label = paddle.where(valid, label, paddle.zeros_like(label))
    pixel_weight = valid.astype(logits.dtype)
    if weight is not None:
        pixel_weight = pixel_weight * paddle.gather(weight, safe_label.flatten()).reshape(safe_label.shape)
    if onednn_applies(logits):
        loss = ops.softmax_cross_entropy(logits, label, ignore_index)  # 0 on ignored pixels
        return (loss if weight is None else loss * pixel_weight), pixel_weight
    # Classes last: Paddle's CPU cross-entropy over axis 1 is ~2.5x slower than a transpose plus the
    # kernel over the last axis (1.40 s vs 0.55 s forward on 2x150x512x512); values equal to rounding.
    loss = F.cross_entropy(logits.transpose([0, 2, 3, 1]), safe_label.unsqueeze(-1), weight=weight,
                           reduction="none", axis=-1, soft_label=False).squeeze(-1)
    return loss * valid.astype(loss.dtype), pixel_weight


@LOSSES.register
class CrossEntropyLoss(nn.Layer):
    """Cross-entropy over pixels whose label is not ``ignore_index``.

    The mean is taken over labelled pixels (weighted by the class weight of each pixel when
    ``weight`` is given), so ignored pixels neither add loss nor dilute it.

    Args:
        weight: one weight per class, or None.
        ignore_index: label value that carries no loss.
        top_k_percent_pixels: average only over this fraction of the hardest pixels (1.0 = all).
        avg_non_ignore: kept for PaddleSeg configs; only True (mean over labelled pixels) is supported.
    """

    def __init__(
        self,
        weight: Optional[List[float]] = None,
        ignore_index: int = 255,
        top_k_percent_pixels: float = 1.0,
        avg_non_ignore: bool = True,
    ):
        super().__init__()
        if not avg_non_ignore:
            raise ConfigError("CrossEntropyLoss.avg_non_ignore: only true (mean over labelled pixels) is supported.")
        if not 0 < top_k_percent_pixels <= 1:
            raise ConfigError(f"CrossEntropyLoss.top_k_percent_pixels: expected (0, 1], got {top_k_percent_pixels}.")
        self.weight = None if weight is None else paddle.to_tensor(weight, dtype="float32")
        self.ignore_index = ignore_index
        self.top_k = top_k_percent_pixels

    def forward(self, logits: paddle.Tensor, label: paddle.Tensor) -> paddle.Tensor:
        """Mean loss of ``logits`` [N, C, H, W] against ``label`` [N, H, W]."""
        if self.weight is not None and self.weight.shape[0] != logits.shape[1]:
            raise ConfigError(
                f"CrossEntropyLoss.weight has {self.weight.shape[0]} entries but the model predicts "
                f"{logits.shape[1]} classes; give one weight per class."
            )
        loss, pixel_weight = _pixel_losses(logits.astype("float32"), label, self.weight, self.ignore_index)
        if self.top_k < 1.0:
            flat = loss.flatten()
            k = max(int(self.top_k * flat.shape[0]), 1)
            top, idx = paddle.topk(flat, k)
            return top.sum() / paddle.clip(paddle.gather(pixel_weight.flatten(), idx).sum(), min=1.0)
        return loss.sum() / paddle.clip(pixel_weight.sum(), min=1.0)


@LOSSES.register
class OhemCrossEntropyLoss(nn.Layer):
    """Online hard example mining cross-entropy (as PaddleSeg's RTFormer/DDRNet recipes use).

    Pixels whose predicted probability of the true class is below ``thresh`` are kept, but at least
    ``min_kept`` pixels (the hardest ones) are always kept.

    Args:
        thresh: keep pixels with true-class probability below this.
        min_kept: keep at least this many pixels per batch.
        ignore_index: label value that carries no loss.
    """

    def __init__(self, thresh: float = 0.7, min_kept: int = 10000, ignore_index: int = 255):
        super().__init__()
        self.thresh = thresh
        self.min_kept = min_kept
        self.ignore_index = ignore_index

    def forward(self, logits: paddle.Tensor, label: paddle.Tensor) -> paddle.Tensor:
        """Mean loss over the kept pixels of ``logits`` [N, C, H, W] against ``label`` [N, H, W]."""
        loss, valid = _pixel_losses(logits.astype("float32"), label, None, self.ignore_index)
        with paddle.no_grad():
            prob = F.softmax(logits.astype("float32"), axis=1)
            safe_label = paddle.where(label != self.ignore_index, label, paddle.zeros_like(label)).astype("int64")
            true_prob = paddle.take_along_axis(prob, safe_label.unsqueeze(1), axis=1).squeeze(1)
            true_prob = paddle.where(valid > 0, true_prob, paddle.ones_like(true_prob))
            num_valid = int(valid.sum())
            threshold = self.thresh
            if 0 < self.min_kept <= num_valid:
                kth = paddle.sort(true_prob.flatten())[min(self.min_kept, num_valid) - 1]
                threshold = max(threshold, float(kth))
            keep = (true_prob <= threshold).astype(loss.dtype) * valid
        return (loss * keep).sum() / paddle.clip(keep.sum(), min=1.0)


@LOSSES.register
class BootstrappedCrossEntropyLoss(nn.Layer):
    """Bootstrapped cross-entropy (PaddleSeg 2.8): per image, the mean over its hardest pixels.

    For each image the per-pixel losses are sorted in descending order. If the ``min_K``-th largest
    (0-based) exceeds ``loss_th``, every pixel above ``loss_th`` is kept, otherwise the ``min_K``
    largest; the image's loss is their mean and the batch loss the mean over images. Ignored
    pixels have loss 0 (and so only count when fewer than ``min_K`` pixels are labelled).

    Args:
        min_K: the minimum number of pixels kept per image.
        loss_th: keep every pixel whose loss is above this.
        weight: one weight per class, or None.
        ignore_index: label value that carries no loss.
    """

    def __init__(self, min_K: int, loss_th: float, weight: Optional[List[float]] = None, ignore_index: int = 255):
        super().__init__()
        if min_K < 1:
            raise ConfigError(f"BootstrappedCrossEntropyLoss.min_K: expected a positive integer, got {min_K}.")
        self.min_k = min_K
        self.threshold = loss_th
        self.weight = None if weight is None else paddle.to_tensor(weight, dtype="float32")
        self.ignore_index = ignore_index

    def forward(self, logits: paddle.Tensor, label: paddle.Tensor) -> paddle.Tensor:
        """Mean over images of ``logits`` [N, C, H, W] against ``label`` [N, H, W]."""
        n, c = logits.shape[:2]
        if logits.shape[2] * logits.shape[3] <= self.min_k:
            raise ConfigError(f"BootstrappedCrossEntropyLoss.min_K ({self.min_k}) must be smaller than the pixels "
                              f"per image ({logits.shape[2] * logits.shape[3]}); lower min_K or enlarge the crop.")
        pixels = logits.astype("float32").transpose([0, 2, 3, 1]).reshape([n, -1, c])
        losses = F.cross_entropy(pixels, label.astype("int64").reshape([n, -1, 1]), weight=self.weight,
                                 ignore_index=self.ignore_index, reduction="none").reshape([n, -1])
        total = 0.0
        for image_losses in paddle.sort(losses, axis=1, descending=True):
            if float(image_losses[self.min_k]) > self.threshold:
                total += image_losses[image_losses > self.threshold].mean()
            else:
                total += image_losses[: self.min_k].mean()
        return total / n
