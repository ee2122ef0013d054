"""PaddleSeg spellings that segkit accepts, translated once when a config is loaded.

PaddleSeg's builder rewrites a few config values before building from them. segkit does the same
here, in one place, so that the rest of segkit (validation, builders, the resolved ``config.yml``)
sees a single spelling:

* ``optimizer.type: sgd`` is ``SGD``, and ``SGD`` with a ``momentum`` key is ``Momentum``
  (``paddleseg/cvlibs/builder.py``, 2.8.0). Every PaddleSeg dataset base file says
  ``optimizer: {type: SGD, momentum: 0.9, weight_decay: 4.0e-5}``.
"""

from typing import Any, Dict


def translate(data: Dict[str, Any]) -> Dict[str, Any]:
    """Rewrite PaddleSeg spellings in the merged config ``data`` in place; returns ``data``."""
    optimizer = data.get("optimizer")
    if isinstance(optimizer, dict):
        if optimizer.get("type") == "sgd":
            optimizer["type"] = "SGD"
        if optimizer.get("type") == "SGD" and "momentum" in optimizer:
            optimizer["type"] = "Momentum"
    return data
