"""PaddleSeg spellings that segkit accepts, translated once when a config is loaded and built.

Configs are written in PaddleSeg's schema, so PaddleSeg's own YAML files run unchanged. Everything
that is a PaddleSeg spelling rather than a segkit constructor argument is translated here, in one
place, so that the rest of segkit (validation, builders, the resolved ``config.yml``) sees a single
spelling and model files know nothing of YAML:

* ``optimizer.type: sgd`` is ``SGD``, and ``SGD`` with a ``momentum`` key is ``Momentum``
  (``paddleseg/cvlibs/builder.py``, 2.8.0). Every PaddleSeg dataset base file says
  ``optimizer: {type: SGD, momentum: 0.9, weight_decay: 4.0e-5}``.
* ``pretrained`` (and ``backbone_pretrained`` of the variant functions) name weights, which are not
  constructor arguments: ``split_weights`` turns them into ``WeightsSpec`` entries applied after the
  model is built. On a model they are whole-model weights (on RTFormer, which has no separate
  backbone, PaddleSeg's ImageNet weights), on a backbone backbone weights; the differences each
  class tolerates are declared by the class (``pretrained_tolerance``).
"""

import copy
from typing import Any, Dict, List, Tuple

from segkit.weights import WeightsSpec

# Weights keys of a model section -> the sub-layer they fill ("" = the model itself).
MODEL_WEIGHT_KEYS = {"backbone_pretrained": "backbone", "pretrained": ""}


def translate(data: Dict[str, Any]) -> Dict[str, Any]:
    """Rewrite PaddleSeg spellings in the merged config ``data`` in place; returns ``data``."""
    optimizer = data.get("optimizer")
    if isinstance(optimizer, dict):
        if optimizer.get("type") == "sgd":
            optimizer["type"] = "SGD"
        if optimizer.get("type") == "SGD" and "momentum" in optimizer:
            optimizer["type"] = "Momentum"
    return data


def split_weights(model: Dict[str, Any]) -> Tuple[Dict[str, Any], List[WeightsSpec]]:
    """The model section without its weights entries, and the weights they name (backbone first).

    Args:
        model: the ``model`` section as written (not modified).

    Returns:
        The section to build, and the weights to apply after building, in order: the
        backbone's weights first, so whole-model weights given as well override them.
    """
    section = copy.deepcopy(model)
    specs = []
    backbone = section.get("backbone")
    if isinstance(backbone, dict):
        location = backbone.pop("pretrained", None)
        if location:
            specs.append(WeightsSpec(str(location), target="backbone", pretrained=True))
    for key, target in MODEL_WEIGHT_KEYS.items():
        location = section.pop(key, None)
        if location:
            specs.append(WeightsSpec(str(location), target=target, pretrained=True))
    return section, specs
