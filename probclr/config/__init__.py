"""Run configuration in three rooms: the schema (probclr.config.schema: one frozen dataclass per section, every
default), reading (probclr.config.reading: YAML files and ``--set`` overrides, typed against the schema) and
checking (probclr.config.validation: one table of every numeric key's range, and the rules relating keys).
An unknown key, a wrongly typed value or an impossible one raises :class:`ConfigError` naming the key."""

from probclr.config.reading import (
    field_key,
    flag_updates,
    from_dict,
    load_config,
    merge,
    parse_override,
    parse_overrides,
    read_yaml_mapping,
    safe_yaml,
    save_config,
    shown,
    to_dict,
)
from probclr.config.schema import (
    AugmentConfig,
    Config,
    DataConfig,
    EvalConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    SupervisedConfig,
)
from probclr.config.validation import RANGES, validate
from probclr.errors import ConfigError

__all__ = [
    "RANGES", "AugmentConfig", "Config", "ConfigError", "DataConfig", "EvalConfig", "LossConfig", "ModelConfig",
    "OptimConfig", "RunConfig", "SupervisedConfig", "field_key", "flag_updates", "from_dict", "load_config", "merge",
    "parse_override", "parse_overrides", "read_yaml_mapping", "safe_yaml", "save_config", "shown", "to_dict",
    "validate",
]
