"""Config loading: inheritance, overrides, strict validation, messages that name file and key."""

import os
import textwrap

import pytest
import yaml

from segkit.config import load_config
from segkit.config.loader import load_yaml_tree
from segkit.errors import ConfigError

MODEL = {"type": "SegFormer", "backbone": {"type": "mit_b0"}, "embedding_dim": 256, "num_classes": 6}


def write(folder, name, text):
    path = os.path.join(folder, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(textwrap.dedent(text))
    return path


def test_base_inheritance_merges_dicts_and_replaces_lists(tmp_path):
    write(tmp_path, "_base_/a.yml", """
        batch_size: 2
        model: {type: SegFormer, backbone: {type: mit_b0}, embedding_dim: 256}
        loss: {types: [{type: CrossEntropyLoss}], coef: [1, 0.4]}
        """)
    top = write(tmp_path, "exp/top.yml", """
        _base_: ../_base_/a.yml
        model: {embedding_dim: 128}
        loss: {coef: [1]}
        """)
    data, sources = load_yaml_tree(top)
    assert data["model"] == {"type": "SegFormer", "backbone": {"type": "mit_b0"}, "embedding_dim": 128}
    assert data["loss"]["coef"] == [1]
    assert data["batch_size"] == 2
    assert sources["model.embedding_dim"].endswith("top.yml")
    assert sources["model.backbone.type"].endswith("a.yml")


def test_base_list_order_and_inherited_false(tmp_path):
    write(tmp_path, "one.yml", "model: {type: A, x: 1, y: 2}\niters: 5\n")
    write(tmp_path, "two.yml", "iters: 7\n")
    top = write(tmp_path, "top.yml", """
        _base_: [one.yml, two.yml]
        model:
          _inherited_: False
          type: B
        """)
    data, _ = load_yaml_tree(top)
    assert data["iters"] == 7
    assert data["model"] == {"type": "B"}


def test_missing_base_names_the_including_file(tmp_path):
    top = write(tmp_path, "top.yml", "_base_: nowhere.yml\n")
    with pytest.raises(ConfigError, match="nowhere.yml.*top.yml"):
        load_yaml_tree(top)


def test_opts_override_nested_keys_and_list_items(tmp_path):
    path = write(tmp_path, "c.yml", yaml.safe_dump({"batch_size": 2, "model": MODEL}))
    cfg = load_config(path, ["batch_size=4", "model.embedding_dim=64", "model.backbone.type=mit_b1"])
    assert cfg.batch_size == 4
    assert cfg.data["model"]["embedding_dim"] == 64
    assert cfg.data["model"]["backbone"]["type"] == "mit_b1"
    assert cfg.file_of("model.embedding_dim") == "--opts"


def test_misspelled_top_level_key_names_file_and_suggestion(tmp_path):
    path = write(tmp_path, "typo.yml", "batch_szie: 4\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "typo.yml" in message and "batch_szie" in message and "batch_size" in message


def test_unknown_model_key_names_dotted_key_file_and_valid_keys(tmp_path):
    base = write(tmp_path, "base.yml", yaml.safe_dump({"model": MODEL}))
    path = write(tmp_path, "top.yml", "_base_: base.yml\nmodel: {embeding_dim: 64}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "top.yml" in message and "model.embeding_dim" in message and "embedding_dim" in message
    assert base not in message


def test_unknown_type_lists_close_matches(tmp_path):
    path = write(tmp_path, "c.yml", yaml.safe_dump({"model": dict(MODEL, type="SegFormr")}))
    with pytest.raises(ConfigError, match=r"model\.type.*'SegFormr'.*SegFormer"):
        load_config(path)


def test_unknown_transform_key_is_caught_at_load_time(tmp_path):
    section = {"type": "Dataset", "dataset_root": ".", "num_classes": 2, "val_path": "v.txt",
               "transforms": [{"type": "Normalize", "meen": [0.5, 0.5, 0.5]}]}
    path = write(tmp_path, "c.yml", yaml.safe_dump({"val_dataset": section}))
    with pytest.raises(ConfigError, match=r"val_dataset\.transforms\.0\.meen.*mean"):
        load_config(path)


# A nested ``{type: ...}`` is looked up in the registry its parameter declares, by validation and by
# building alike (one walk): each bad section fails the same way when loaded and when built.
NESTED_ERRORS = [
    ({"model": dict(MODEL, backbone={"type": "segformer_b0"})},  # a model, not a backbone
     "model", r"model\.backbone\.type: unknown backbones type 'segformer_b0'"),
    ({"model": dict(MODEL, embedding_dim={"type": "mit_b0"})},  # a parameter that declares no registry
     "model", r"model\.embedding_dim: SegFormer\.embedding_dim is a plain value, not a \{type: \.\.\.\} component"),
    ({"val_dataset": {"type": "Dataset", "dataset_root": ".", "num_classes": 2, "val_path": "v.txt", "mode": "val",
                      "transforms": [{"type": "Normalize"}, {"type": "mit_b0"}]}},
     "val_dataset", r"val_dataset\.transforms\.1\.type: unknown transforms type 'mit_b0'"),
    ({"loss": {"types": [{"type": "MixedLoss", "losses": [{"type": "Normalize"}], "coef": [1]}], "coef": [1]}},
     "loss", r"loss\.types\.0\.losses\.0\.type: unknown losses type 'Normalize'"),
]


@pytest.mark.parametrize("data, section, message", NESTED_ERRORS)
def test_nested_components_come_from_the_registry_their_parameter_declares(data, section, message):
    from segkit.config import Config
    from segkit.registry import DATASETS, LOSSES, MODELS, build

    with pytest.raises(ConfigError, match=message):
        Config(data)
    registry = {"model": MODELS, "val_dataset": DATASETS, "loss": LOSSES}[section]
    cfg = data[section]["types"][0] if section == "loss" else data[section]
    where = "loss.types.0" if section == "loss" else section
    with pytest.raises(ConfigError, match=message):
        build(cfg, registry, where)


def test_declared_registries():
    import segkit.models  # noqa: F401
    from segkit.datasets.base import Dataset
    from segkit.losses.multi import MixedLoss
    from segkit.registry import BACKBONES, LOSSES, MODELS, TRANSFORMS, declared_registry

    assert declared_registry(MODELS.get("SegFormer"), "backbone") is BACKBONES
    assert declared_registry(MODELS.get("SegNeXt"), "backbone") is BACKBONES
    assert declared_registry(Dataset, "transforms") is TRANSFORMS
    assert declared_registry(MixedLoss, "losses") is LOSSES
    assert declared_registry(MODELS.get("SegFormer"), "embedding_dim") is None


def test_wrong_type_of_value(tmp_path):
    path = write(tmp_path, "c.yml", "iters: ten\n")
    with pytest.raises(ConfigError, match="iters: expected int"):
        load_config(path)


def test_loss_types_and_coef_must_agree(tmp_path):
    path = write(tmp_path, "c.yml", yaml.safe_dump({"loss": {"types": [{"type": "CrossEntropyLoss"}] * 2, "coef": [1, 0.4, 0.4]}}))
    with pytest.raises(ConfigError, match="2 types but 3 coef"):
        load_config(path)


def test_val_only_config_does_not_need_training_sections(tmp_path):
    path = write(tmp_path, "c.yml", yaml.safe_dump({"model": MODEL}))
    cfg = load_config(path)
    assert cfg.build_model().num_classes == 6
    with pytest.raises(ConfigError, match="training needs the 'optimizer' section"):
        cfg.build_optimizer(None, None)


def test_test_config_rejects_ignored_flags(tmp_path):
    path = write(tmp_path, "c.yml", yaml.safe_dump({"test_config": {"scales": [0.75, 1.0]}}))
    with pytest.raises(ConfigError, match="aug_eval is off"):
        load_config(path)
    path = write(tmp_path, "d.yml", yaml.safe_dump({"test_config": {"is_slide": True, "crop_size": [64, 64]}}))
    with pytest.raises(ConfigError, match="needs both crop_size and stride"):
        load_config(path)


def test_dump_writes_resolved_config(tmp_path):
    write(tmp_path, "base.yml", yaml.safe_dump({"model": MODEL, "iters": 3}))
    path = write(tmp_path, "top.yml", "_base_: base.yml\niters: 9\n")
    cfg = load_config(path, ["batch_size=5"])
    out = tmp_path / "out" / "config.yml"
    cfg.dump(str(out))
    resolved = yaml.safe_load(out.read_text())
    assert resolved["iters"] == 9 and resolved["batch_size"] == 5 and resolved["model"]["type"] == "SegFormer"
    assert "_base_" not in resolved


def test_test_config_error_names_the_file_once(tmp_path):
    path = write(tmp_path, "tiny.yml", yaml.safe_dump({"test_config": {"is_slide": True}}))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).count("tiny.yml") == 1
