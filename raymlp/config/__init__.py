"""The pipeline config: one schema, loaded from YAML with overrides."""

from raymlp.config.load import (
    ConfigError,
    apply_override,
    config_digest,
    load_config,
    parse_config,
    save_config,
    with_values,
)
from raymlp.config.schema import PipelineConfig

__all__ = [
    "ConfigError",
    "PipelineConfig",
    "apply_override",
    "config_digest",
    "load_config",
    "parse_config",
    "save_config",
    "with_values",
]
