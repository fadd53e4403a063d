"""The config: its schema (`schema.py`: every key, type, default and doc) and how a YAML file becomes
a checked `Config` (`load.py`). Only this package knows YAML; only the schema holds defaults."""

from ptft_cli.config.load import dump, load, load_dict, resume_changes
from ptft_cli.config.schema import (
    DECODERS,
    ENCODERS,
    HUB_ID,
    Config,
    DataConfig,
    DistributedConfig,
    EvaluateConfig,
    LoggingConfig,
    LoraConfig,
    ModelConfig,
    ObjectiveConfig,
    PredictConfig,
    SftConfig,
    TokenizerConfig,
    TrainingConfig,
    reference,
    resume_safe_keys,
    type_name,
)

__all__ = [
    "DECODERS",
    "ENCODERS",
    "HUB_ID",
    "Config",
    "DataConfig",
    "DistributedConfig",
    "EvaluateConfig",
    "LoggingConfig",
    "LoraConfig",
    "ModelConfig",
    "ObjectiveConfig",
    "PredictConfig",
    "SftConfig",
    "TokenizerConfig",
    "TrainingConfig",
    "dump",
    "load",
    "load_dict",
    "reference",
    "resume_changes",
    "resume_safe_keys",
    "type_name",
]
