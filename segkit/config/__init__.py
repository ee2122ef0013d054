"""Config loading: YAML with ``_base_`` inheritance, ``--opts`` overrides, strict validation."""

from segkit.config.config import INFERENCE_SECTIONS, Config, TestConfig, load_config  # noqa: F401
from segkit.config.loader import apply_opts, load_yaml_tree, parse_opt  # noqa: F401
