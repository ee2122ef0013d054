"""Helpers shared by the test files (import them; do not copy them)."""

import json
import os

from segkit.weights import WeightsSpec, apply_weights


def train_log(save_dir) -> list:
    """The records of a run's ``train_log.jsonl``, one dict per iteration."""
    with open(os.path.join(save_dir, "train_log.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def with_pretrained(layer, location: str):
    """``layer`` after loading ``location`` as its pretrained weights (as a config's ``pretrained`` does)."""
    apply_weights(layer, WeightsSpec(location, pretrained=True))
    return layer
