"""The resolved config: schema checks at load time and builders for each section."""

import dataclasses
import os
from typing import Any, Dict, List, Optional, Sequence

import yaml

from segkit.config import paddleseg
from segkit.config.loader import Sources, apply_opts, load_yaml_tree
from segkit.config.paddleseg import split_weights
from segkit.errors import ConfigError
from segkit.optim import build_lr_scheduler, check_lr_scheduler
from segkit.weights import WeightsSpec, apply_weights
from segkit.registry import (
    DATASETS,
    LOSSES,
    MODELS,
    OPTIMIZERS,
    build,
    did_you_mean,
    validate,
)


@dataclasses.dataclass
class TestConfig:
    """How evaluation and prediction run inference (the ``test_config`` section).

    Attributes:
        is_slide: sliding-window inference instead of whole-image.
        crop_size: window (width, height) for sliding inference.
        stride: window step (width, height) for sliding inference.
        aug_eval: multi-scale and/or flip test-time augmentation.
        scales: image scales for ``aug_eval`` (1.0 = original size).
        flip_horizontal: add horizontally flipped copies for ``aug_eval``.
        flip_vertical: add vertically flipped copies for ``aug_eval``.
    """

    __test__ = False  # not a pytest class

    is_slide: bool = False
    crop_size: Optional[List[int]] = None
    stride: Optional[List[int]] = None
    aug_eval: bool = False
    scales: List[float] = dataclasses.field(default_factory=lambda: [1.0])
    flip_horizontal: bool = False
    flip_vertical: bool = False

    def check(self, where: str = "test_config") -> "TestConfig":
        """Reject inconsistent settings instead of silently ignoring them."""
        if self.is_slide and (not self.crop_size or not self.stride):
            raise ConfigError(
                f"{where}: sliding-window inference needs both crop_size and stride, e.g. "
                "--crop_size 512 512 --stride 384 384.",
                key=where,
            )
        for name in ("crop_size", "stride"):
            value = getattr(self, name)
            if value is not None and (len(value) != 2 or not all(isinstance(v, int) and v > 0 for v in value)):
                raise ConfigError(f"{where}.{name}: expected [width, height] as two positive integers, got {value!r}.", key=f"{where}.{name}")
        if isinstance(self.scales, (int, float)):
            self.scales = [float(self.scales)]
        if not self.scales or any(s <= 0 for s in self.scales):
            raise ConfigError(f"{where}.scales: expected positive numbers, got {self.scales!r}.", key=f"{where}.scales")
        augmenting = self.flip_horizontal or self.flip_vertical or list(self.scales) != [1.0]
        if augmenting and not self.aug_eval:
            raise ConfigError(
                f"{where}: scales/flips are set but aug_eval is off, so they would be ignored. "
                "Set aug_eval: true (--aug_eval) or remove them.",
                key=where,
            )
        return self


# Top-level keys: expected Python type and whether the section is a buildable component.
SCHEMA = {
    "batch_size": int,
    "iters": int,
    "train_dataset": dict,
    "val_dataset": dict,
    "optimizer": dict,
    "lr_scheduler": dict,
    "loss": dict,
    "model": dict,
    "test_config": dict,
    "export": dict,
    "sync_bn": bool,
}


class Config:
    """A loaded, validated config.

    Args:
        data: the merged config dict; PaddleSeg spellings are translated in place
            (``segkit.config.paddleseg``).
        path: the file it was loaded from (for messages).
        sources: dotted key -> file that set it.
        sections: the top-level sections the caller uses; only these are checked in depth (an
            inference tool need not fail on a training section it never reads). None: all.
    """

    def __init__(self, data: Dict[str, Any], path: str = "<dict>", sources: Optional[Sources] = None,
                 sections: Optional[Sequence[str]] = None):
        register_components()
        self.data = paddleseg.translate(data)
        self.path = path
        self.sources = sources or {}
        self.sections = tuple(SCHEMA) if sections is None else tuple(sections)
        self._check()

    # ---- messages -------------------------------------------------------------------------
    def file_of(self, key: str) -> str:
        """The file that set ``key`` (or its closest parent)."""
        parts = key.split(".")
        for n in range(len(parts), 0, -1):
            found = self.sources.get(".".join(parts[:n]))
            if found:
                return found
        return self.path

    def error(self, exc: ConfigError) -> ConfigError:
        """Prefix a ConfigError with the file its key came from."""
        return ConfigError(f"{self.file_of(exc.key)}: {exc}", key=exc.key)

    def require(self, key: str, purpose: str) -> Any:
        """Return a top-level section, or fail saying which tool needs it."""
        if key not in self.data:
            raise ConfigError(f"{self.path}: {purpose} needs the '{key}' section, which the config does not have.", key=key)
        return self.data[key]

    # ---- checks ---------------------------------------------------------------------------
    def _check(self) -> None:
        try:
            for key, value in self.data.items():
                if key not in SCHEMA:
                    raise ConfigError(
                        f"{key}: unknown top-level key.{did_you_mean(key, SCHEMA)} Valid keys: {', '.join(SCHEMA)}.",
                        key=key,
                    )
                if key not in self.sections:
                    continue
                if not isinstance(value, SCHEMA[key]) or (isinstance(value, bool) and SCHEMA[key] is not bool):
                    raise ConfigError(f"{key}: expected {SCHEMA[key].__name__}, got {value!r}.", key=key)
            for key in ("batch_size", "iters"):
                if key in self.data and key in self.sections and self.data[key] <= 0:
                    raise ConfigError(f"{key}: must be a positive integer, got {self.data[key]}.", key=key)
            self._check_components()
        except ConfigError as exc:
            raise self.error(exc) from None

    def _check_components(self) -> None:
        present = [key for key in self.sections if key in self.data]
        for key in ("train_dataset", "val_dataset"):
            if key in present:
                validate(self.data[key], DATASETS, key, provided=("mode",))
        if "model" in present:
            validate(split_weights(self.data["model"])[0], MODELS, "model", provided=("num_classes",))
        if "optimizer" in present:
            validate(self.data["optimizer"], OPTIMIZERS, "optimizer")
        if "lr_scheduler" in present:
            check_lr_scheduler(self.data["lr_scheduler"])
        if "loss" in present:
            self._check_loss(self.data["loss"])
        if "test_config" in present:
            self._test_config()
        if "export" in present:
            unknown = set(self.data["export"]) - {"transforms"}
            if unknown:
                raise ConfigError(f"export.{sorted(unknown)[0]}: unknown key; export takes only 'transforms'.", key="export")

    def _check_loss(self, loss: Dict[str, Any]) -> None:
        unknown = set(loss) - {"types", "coef"}
        if unknown:
            key = sorted(unknown)[0]
            raise ConfigError(f"loss.{key}: unknown key.{did_you_mean(key, ['types', 'coef'])} loss takes types and coef.", key=f"loss.{key}")
        types, coef = loss.get("types"), loss.get("coef")
        if not isinstance(types, list) or not types:
            raise ConfigError("loss.types: expected a non-empty list of losses, e.g. [{type: CrossEntropyLoss}].", key="loss.types")
        if not isinstance(coef, list) or not all(isinstance(c, (int, float)) for c in coef):
            raise ConfigError(f"loss.coef: expected a list of numbers, one per model output, got {coef!r}.", key="loss.coef")
        if len(types) not in (1, len(coef)):
            raise ConfigError(
                f"loss: {len(types)} types but {len(coef)} coef; give one type per coef, or one type for all.",
                key="loss.types",
            )
        for i, item in enumerate(types):
            validate(item, LOSSES, f"loss.types.{i}")

    # ---- plain values ---------------------------------------------------------------------
    def has(self, key: str) -> bool:
        """Whether the config has the top-level section ``key``."""
        return key in self.data

    @property
    def sync_bn(self) -> bool:
        """``sync_bn: true``: BatchNorm statistics over all processes."""
        return bool(self.data.get("sync_bn", False))

    def export_transforms(self) -> List[Any]:
        """The transforms an exported model's deploy.yaml names: ``export``'s, else ``val_dataset``'s."""
        section = self.data.get("export") or self.data.get("val_dataset") or {}
        return section.get("transforms", [])

    def _labelled_dataset(self) -> Dict[str, Any]:
        """The dataset section that describes the classes at prediction time (val, else train)."""
        return self.data.get("val_dataset") or self.data.get("train_dataset") or {}

    def _dataset_class_attribute(self, name: str):
        """A class attribute (``PALETTE``, ``CLASS_NAMES``) of the configured dataset type, or None."""
        kind = self._labelled_dataset().get("type")
        return getattr(DATASETS.get(kind), name, None) if kind in DATASETS else None

    def palette(self) -> List[List[int]]:
        """The dataset's colours: its ``palette`` key, else its class's ``PALETTE``, else the default palette."""
        from segkit.datasets.base import default_palette

        return (self._labelled_dataset().get("palette") or self._dataset_class_attribute("PALETTE")
                or default_palette(self.num_classes()))

    def class_names(self) -> List[str]:
        """The dataset's class names (its ``class_names`` key or class), else ``class_i``."""
        names = self._labelled_dataset().get("class_names") or self._dataset_class_attribute("CLASS_NAMES")
        count = self.num_classes()
        return list(names) if names and len(names) == count else [f"class_{i}" for i in range(count)]

    def ignore_index(self) -> int:
        """The label value that marks unlabelled pixels (255 unless the dataset says otherwise)."""
        return self._labelled_dataset().get("ignore_index", 255)

    @property
    def batch_size(self) -> int:
        """Images per step (per device)."""
        return self.require("batch_size", "training")

    @property
    def iters(self) -> int:
        """Number of training iterations."""
        return self.require("iters", "training")

    def test_config(self) -> TestConfig:
        """The ``test_config`` section as a checked TestConfig."""
        try:
            return self._test_config()
        except ConfigError as exc:
            raise self.error(exc) from None

    def _test_config(self) -> TestConfig:
        section = self.data.get("test_config", {})
        fields = {f.name for f in dataclasses.fields(TestConfig)}
        for key in section:
            if key not in fields:
                raise ConfigError(
                    f"test_config.{key}: unknown key.{did_you_mean(key, fields)} Valid keys: {', '.join(sorted(fields))}.",
                    key=f"test_config.{key}",
                )
        return TestConfig(**section).check()

    # ---- builders -------------------------------------------------------------------------
    def _build(self, key: str, registry, purpose: str, **extra):
        section = self.require(key, purpose)
        try:
            return build(section, registry, key, **extra)
        except ConfigError as exc:
            raise self.error(exc) from None

    def build_dataset(self, mode: str):
        """Build ``train_dataset`` (mode 'train') or ``val_dataset`` (mode 'val')."""
        key = "train_dataset" if mode == "train" else "val_dataset"
        return self._build(key, DATASETS, f"{mode} data", mode=mode)

    def build_transforms(self, mode: str):
        """The transforms of ``train_dataset`` (mode 'train') or ``val_dataset`` (mode 'val') as one Compose."""
        from segkit.datasets.base import build_transforms
        from segkit.transforms import Compose

        key = "train_dataset" if mode == "train" else "val_dataset"
        section = self.require(key, f"{mode} transforms")
        try:
            return Compose(build_transforms(section.get("transforms", []), key))
        except ConfigError as exc:
            raise self.error(exc) from None

    def num_classes(self) -> int:
        """The class count: the model's, else the datasets'."""
        for key in ("model", "train_dataset", "val_dataset"):
            section = self.data.get(key) or {}
            if "num_classes" in section:
                return int(section["num_classes"])
            if key != "model" and section.get("type") in DATASETS:
                fixed = getattr(DATASETS.get(section["type"]), "NUM_CLASSES", None)
                if fixed:
                    return int(fixed)
        raise ConfigError(f"{self.path}: cannot tell the number of classes; set model.num_classes.", key="model")

    def weights(self) -> List[WeightsSpec]:
        """The pretrained weights the model section names (``pretrained`` keys), in the order they apply."""
        return split_weights(self.require("model", "building the model"))[1]

    def build_model(self, pretrained: bool = True):
        """Build the model, filling ``num_classes`` from the dataset when the model does not set it.

        Args:
            pretrained: then apply the config's pretrained weights (``weights()``); False when other
                weights replace them anyway (``--model_path``, a resumed checkpoint).
        """
        section, specs = split_weights(self.require("model", "building the model"))
        try:
            model = build(section, MODELS, "model", num_classes=self.num_classes())
        except ConfigError as exc:
            raise self.error(exc) from None
        for spec in specs if pretrained else ():
            apply_weights(model, spec)
        return model

    def build_loss(self):
        """Build the multi-output loss from ``loss.types`` and ``loss.coef``."""
        from segkit.losses import MultiLoss

        loss = self.require("loss", "training")
        types = loss["types"] * len(loss["coef"]) if len(loss["types"]) == 1 else loss["types"]
        try:
            built = [build(t, LOSSES, f"loss.types.{i}") for i, t in enumerate(types)]
        except ConfigError as exc:
            raise self.error(exc) from None
        return MultiLoss(built, [float(c) for c in loss["coef"]])

    def build_lr_scheduler(self):
        """Build the learning-rate schedule as PaddleSeg does (``segkit.optim.build_lr_scheduler``)."""
        section = self.require("lr_scheduler", "training")
        try:
            return build_lr_scheduler(section, self.iters)
        except ConfigError as exc:
            raise self.error(exc) from None

    def build_optimizer(self, model, lr_scheduler):
        """Build the optimizer over ``model``'s parameters with the given schedule."""
        factory = self._build("optimizer", OPTIMIZERS, "training")
        try:
            return factory(model, lr_scheduler)
        except ConfigError as exc:
            raise self.error(exc) from None

    # ---- output ---------------------------------------------------------------------------
    def dump(self, path: str) -> None:
        """Write the resolved config (inheritance and overrides applied) as YAML."""
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            yaml.safe_dump(self.data, f, sort_keys=False)


def register_components() -> None:
    """Import every module that registers components, so configs can name them."""
    import segkit.datasets  # noqa: F401
    import segkit.losses  # noqa: F401
    import segkit.models  # noqa: F401
    import segkit.optim  # noqa: F401
    import segkit.transforms  # noqa: F401


# The sections each inference tool reads; the others are not checked in depth for that tool.
INFERENCE_SECTIONS = ("model", "val_dataset", "test_config", "export")


def load_config(path: str, opts: Sequence[str] = (), sections: Optional[Sequence[str]] = None) -> Config:
    """Load a YAML config with its ``_base_`` files and ``--opts`` overrides, and check it.

    Args:
        path: the YAML file.
        opts: ``key=value`` overrides, applied after inheritance.
        sections: the top-level sections the caller uses (checked in depth); None checks all.
    """
    data, sources = load_yaml_tree(path)
    apply_opts(data, sources, opts)
    return Config(data, path=path, sources=sources, sections=sections)
