"""Config: Hydra composition (workspace ``conf/`` first, packaged defaults after), checked once into
frozen, typed values that every other stage takes."""

from medlora.config.compose import compose, load_run_config, to_run_config
from medlora.config.study import to_study_config
from medlora.config.schema import (
    AskConfig,
    DataConfig,
    EvaluateConfig,
    ExportConfig,
    GenerationConfig,
    LoraConfig,
    ModelConfig,
    Paths,
    ProbeConfig,
    RunConfig,
    ServeConfig,
    TinyModelArgs,
    TrainConfig,
)
from medlora.config.study_schema import ParamSpec, StudyConfig

__all__ = ["compose", "load_run_config", "to_run_config", "to_study_config", "AskConfig", "DataConfig",
           "EvaluateConfig", "ExportConfig", "GenerationConfig", "LoraConfig", "ModelConfig", "ParamSpec", "Paths", "ProbeConfig",
           "RunConfig", "ServeConfig", "StudyConfig", "TinyModelArgs", "TrainConfig"]
