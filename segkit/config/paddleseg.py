"""PaddleSeg spellings that segkit accepts, translated once when a config is loaded and built.

Configs are written in PaddleSeg's schema, so PaddleSeg's own YAML files run unchanged. Everything
that is a PaddleSeg spelling rather than a segkit constructor argument is translated here, in one
place, so that the rest of segkit (validation, builders, the resolved ``config.yml``) sees a single
spelling and model files know nothing of YAML:

* ``optimizer.type: sgd`` is ``SGD``, and ``SGD`` with a ``momentum`` key is ``Momentum``
  (``paddleseg/cvlibs/builder.py``, 2.8.0). Every PaddleSeg dataset base file says
  ``optimizer: {type: SGD, momentum: 0.9, weight_decay: 4.0e-5}``.
* Type names: segkit registers classes under their class name (``SegFormer``, ``MSCAN``) and
  variants under lower-case ``family_size`` names (``segformer_b0``, ``mit_b0``, ``mscan_t``,
  ``hrvit_b1``). PaddleSeg's backbone names (``MixVisionTransformer_B0``, ``MSCAN_T``) and segkit's
  earlier ``HRViT_b1`` are aliases of those (``BACKBONE_ALIASES``).
* SegNeXt's ``decoder_cfg`` dict and its ``ham_kwargs`` (``MD_R``, ``MD_S``, ...) become ``SegNeXt``'s
  keyword arguments (``decoder_channels``, ``nmf_rank``, ...); unknown keys and keys PaddleSeg
  accepts but ignores (``INV_T``, ``ETA``, ``MD_D``) are errors naming their YAML path.
* ``pretrained`` (and ``backbone_pretrained`` of the variant functions) name weights, which are not
  constructor arguments: ``split_weights`` turns them into ``WeightsSpec`` entries applied after the
  model is built. On a model they are whole-model weights (on RTFormer, which has no separate
  backbone, PaddleSeg's ImageNet weights), on a backbone backbone weights; the differences each
  class tolerates are declared by the class (``pretrained_tolerance``).
"""

import copy
from typing import Any, Dict, List, Optional, Tuple

from segkit.errors import ConfigError
from segkit.registry import did_you_mean
from segkit.weights import WeightsSpec

# Backbone type names of PaddleSeg 2.8 (and segkit's earlier HRViT names) -> segkit's registered names.
BACKBONE_ALIASES = {
    **{f"MixVisionTransformer_B{i}": f"mit_b{i}" for i in range(6)},
    **{f"MSCAN_{size}": f"mscan_{size.lower()}" for size in "TSBL"},
    **{f"HRViT_b{i}": f"hrvit_b{i}" for i in (1, 2, 3)},
}

# PaddleSeg's SegNeXt ``decoder_cfg`` keys and ``ham_kwargs`` keys -> SegNeXt's keyword arguments.
SEGNEXT_DECODER_KEYS = {"channels": "decoder_channels", "ham_channels": "ham_channels", "num_groups": "num_groups",
                        "dropout_rate": "dropout_rate", "align_corners": "align_corners"}
SEGNEXT_HAM_KEYS = {"MD_R": "nmf_rank", "MD_S": "nmf_groups", "SPATIAL": "nmf_spatial",
                    "TRAIN_STEPS": "nmf_train_steps", "EVAL_STEPS": "nmf_eval_steps"}
# ``ham_kwargs`` keys that change nothing in PaddleSeg's NMF: INV_T is fixed to 1, D is
# ham_channels / MD_S, ETA only matters for fixed bases.
IGNORED_HAM_KEYS = {"INV_T": "is fixed to 1 for NMF", "ETA": "is used only with fixed bases",
                    "MD_D": "is always ham_channels / MD_S"}

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
    model = data.get("model")
    if isinstance(model, dict):
        translate_model(model)
    return data


def translate_model(model: Dict[str, Any], where: str = "model") -> Dict[str, Any]:
    """Rewrite a model section's PaddleSeg spellings in place (backbone type names, SegNeXt's
    ``decoder_cfg``); returns ``model``."""
    backbone = model.get("backbone")
    if isinstance(backbone, dict) and backbone.get("type") in BACKBONE_ALIASES:
        backbone["type"] = BACKBONE_ALIASES[backbone["type"]]
    if model.get("type") == "SegNeXt" and "decoder_cfg" in model:
        native = segnext_decoder_args(model.pop("decoder_cfg"), f"{where}.decoder_cfg")
        for key in native:
            if key in model:
                raise ConfigError(f"{where}.{key}: set twice, here and in PaddleSeg's spelling under {where}.decoder_cfg; "
                                  f"keep one (to override a config that sets {where}.{key}, use --opts {where}.{key}=...).",
                                  key=f"{where}.{key}")
        model.update(native)
    return model


def canonical_backbone(name: str) -> str:
    """A backbone's registered name for ``name``, which may be a PaddleSeg alias (``MSCAN_T`` -> ``mscan_t``)."""
    return BACKBONE_ALIASES.get(name, name)


def _mapping(value: Any, where: str) -> Dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping, got {value!r}.", key=where)
    return dict(value)


def segnext_decoder_args(decoder_cfg: Optional[Dict[str, Any]], where: str = "model.decoder_cfg") -> Dict[str, Any]:
    """PaddleSeg's SegNeXt ``decoder_cfg`` (with ``ham_kwargs``) -> ``SegNeXt`` keyword arguments.

    Args:
        decoder_cfg: e.g. ``{channels: 256, ham_channels: 256, ham_kwargs: {MD_R: 16}}``.
        where: its dotted config key, for messages.

    Raises:
        ConfigError: an unknown key, a ``ham_kwargs`` key PaddleSeg ignores, or fixed NMF bases
            (``RAND_INIT: false``), naming the key's YAML path.
    """
    section = _mapping(decoder_cfg, where)
    ham_kwargs = _mapping(section.pop("ham_kwargs", None), f"{where}.ham_kwargs")
    valid = [*SEGNEXT_DECODER_KEYS, "ham_kwargs"]
    for key in section:
        if key not in SEGNEXT_DECODER_KEYS:
            raise ConfigError(f"{where}.{key}: unknown key for LightHamHead.{did_you_mean(key, valid)} "
                              f"Valid keys: {', '.join(valid)}.", key=f"{where}.{key}")
    args = {SEGNEXT_DECODER_KEYS[k]: v for k, v in section.items()}
    return {**args, **nmf_args(ham_kwargs, f"{where}.ham_kwargs")}


def nmf_args(ham_kwargs: Dict[str, Any], where: str = "ham_kwargs") -> Dict[str, Any]:
    """PaddleSeg's ``ham_kwargs`` (MD_R, MD_S, SPATIAL, TRAIN_STEPS, EVAL_STEPS) -> ``SegNeXt``'s ``nmf_*`` arguments."""
    ham_kwargs = dict(ham_kwargs)
    if ham_kwargs.pop("RAND_INIT", True) is not True:
        raise ConfigError(f"{where}.RAND_INIT: only random NMF bases (True) are supported.", key=f"{where}.RAND_INIT")
    for key in ham_kwargs:
        if key in IGNORED_HAM_KEYS:
            raise ConfigError(f"{where}.{key} {IGNORED_HAM_KEYS[key]} (upstream ignores it too); remove it.",
                              key=f"{where}.{key}")
        if key not in SEGNEXT_HAM_KEYS:
            raise ConfigError(f"{where}.{key}: unknown key.{did_you_mean(key, SEGNEXT_HAM_KEYS)} "
                              f"Valid keys: {', '.join(SEGNEXT_HAM_KEYS)}, RAND_INIT.", key=f"{where}.{key}")
    return {SEGNEXT_HAM_KEYS[k]: v for k, v in ham_kwargs.items()}


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
