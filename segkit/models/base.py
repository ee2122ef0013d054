"""The contract every segmentation model and backbone in segkit follows.

* A backbone is an ``nn.Layer`` whose ``forward(x)`` returns a list of feature maps and which
  declares ``out_channels`` and ``out_strides`` (one entry per output), so heads take their input
  widths from it rather than from a second copy in YAML.
* A segmentation model is a ``SegModel``. In training mode ``forward(x)`` returns the list of
  logits (main first, auxiliaries after), ``num_outputs`` long; in eval mode it returns the main
  logits alone. Logits are resized to the input's height and width by ``resize_output``
  (bilinear, ``output_align_corners``); inside ``head_resolution(model)`` an eval forward returns
  them at the head's resolution instead, so that ``segkit.engine.inference`` can take the class
  map without upsampling every class (the same resize, applied later to fewer channels).
* Constructors are pure: they build the layers with their initial weights and never read a file.
  Their arguments are keyword-only and typed; a parameter that takes another component declares
  its registry in the annotation (``backbone: Backbone``), so configs are checked and built from it.
  Weights are applied after the model is built, by ``segkit.weights.apply_weights``.
* A model whose upstream checkpoints use other key names provides ``remap_checkpoint_keys``, a
  pure function from the upstream state dict to segkit's; ``apply_weights`` applies it once.
* A model or backbone whose pretrained weights may differ from it in named ways (a classifier for
  another number of classes, an ImageNet head) declares them as the class attribute
  ``pretrained_tolerance`` (a ``segkit.weights.Tolerance``); anything else must match.
"""

import contextlib
from typing import Annotated, Dict, Iterator, List, Sequence

import numpy as np
import paddle
from paddle import nn

from segkit.models.layers import resize_bilinear
from segkit.registry import BACKBONES

# The annotation of a model's ``backbone`` parameter: in a config, ``backbone: {type: ...}`` names a
# backbone of the BACKBONES registry, which is built first and passed in.
Backbone = Annotated[nn.Layer, BACKBONES]


class SegModel(nn.Layer):
    """Base class of segmentation models.

    Attributes:
        num_outputs: how many logits the model returns in training (main + auxiliaries).
        num_classes: the number of classes it predicts.
    """

    num_outputs: int = 1
    num_classes: int
    output_align_corners: bool = False
    matrix_resize_in_training: bool = True  # resize_output's training resize by segkit.models.layers.resize_bilinear
    _head_resolution: bool = False

    @staticmethod
    def remap_checkpoint_keys(state: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Translate an upstream checkpoint's keys to this model's; identity by default."""
        return state

    def resize_output(self, logits: paddle.Tensor, size: Sequence[int]) -> paddle.Tensor:
        """Resize head logits to the input ``size`` (H, W): the last op of every forward.

        Skipped in eval inside ``head_resolution(model)``, where the caller applies the same
        resize (``bilinear``, ``output_align_corners``) itself.
        """
        if self._head_resolution and not self.training:
            return logits
        if self.training and self.matrix_resize_in_training:  # for the loss: faster, equal to float rounding
            return resize_bilinear(logits, size, self.output_align_corners)
        # Evaluation keeps Paddle's kernel: segkit.engine.class_map resizes the classes it keeps
        # with it and must give the class map of this full resize bit for bit.
        return nn.functional.interpolate(logits, size=size, mode="bilinear",
                                         align_corners=self.output_align_corners)

    def outputs(self, logits: List[paddle.Tensor]):
        """Return ``logits`` in training and only the main logits in eval (the forward contract)."""
        return logits if self.training else logits[0]


@contextlib.contextmanager
def head_resolution(model: nn.Layer) -> Iterator[bool]:
    """Within the block an eval forward of a ``SegModel`` returns logits at the head's resolution.

    Yields whether ``model`` supports it (a ``SegModel``); other layers are left as they are.
    """
    if not isinstance(model, SegModel):
        yield False
        return
    model._head_resolution = True
    try:
        yield True
    finally:
        model._head_resolution = False


def seed_inference(model: nn.Layer, seed: int) -> None:
    """Seed Paddle's RNG and the fixed random parts of ``model``'s eval (SegNeXt's NMF bases) with ``seed``.

    Every sublayer with a ``seed_eval_bases(seed)`` method is reseeded, so dygraph evaluation with
    ``--seed N`` and a program exported with ``--seed N`` compute the same function.
    """
    paddle.seed(seed)
    for layer in model.sublayers(include_self=True):
        if hasattr(layer, "seed_eval_bases"):
            layer.seed_eval_bases(seed)
