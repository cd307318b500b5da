"""One LoRA fine-tuning run, tracked in MLflow. Knows nothing of Optuna.

    prepare data -> fresh base model -> LoRA layers -> mlx_lm.tuner.train(callbacks)
    -> best and final adapters, samples, loss curve, metrics in one MLflow run

Extra callbacks (pruning, memory guard) are passed in by the caller.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import mlflow
import mlx.core as mx
import mlx.optimizers as optim
import yaml
from mlx.utils import tree_flatten
from mlx_lm.tuner.callbacks import TrainingCallback
from mlx_lm.tuner.trainer import TrainingArgs
from mlx_lm.tuner.trainer import train as mlx_train
from mlx_lm.tuner.utils import build_schedule
from mlx_lm.utils import get_total_parameters

from medlora import tracking
from medlora.config import RunConfig
from medlora.data import splits
from medlora.faults import kill_point
from medlora.files import temporary_dir
from medlora.models import blas
from medlora.models.fastmath import fast_kernels
from medlora.models.load import load_model, model_path
from medlora.training.batches import batch_iterator, load_datasets
from medlora.training.callbacks import (
    BestAdapterKeeper,
    CallbackList,
    History,
    MetricsLogger,
    ProbeSampler,
    loss_curve_figure,
    save_adapter,
    shown,
)
from medlora.training.lora import adapter_config, add_lora
from medlora.training.loss import training_loss
from medlora.training.memory_guard import peak_rss_gb, reset_peaks
from medlora.training.progress_table import training_table

OPTIMIZERS = {"adam": optim.Adam, "adamw": optim.AdamW, "sgd": optim.SGD}
# The settings logged as MLflow params, what a person compares across runs; the whole resolved config
# is the run's artifact config.yaml. A study adds the keys it searches.
KEY_SETTINGS = ("model.name", "lora.rank", "lora.scale", "lora.num_layers", "lora.dropout", "train.batch_size",
                "train.iters", "train.learning_rate", "train.lr_schedule", "train.optimizer", "train.max_seq_length",
                "train.truncation", "train.loss", "train.val_examples", "train.seed")


@dataclass(frozen=True)
class RunResult:
    run_id: str
    first_val_loss: float  # the base model (iteration 0)
    final_val_loss: float  # the last evaluation
    best_val_loss: float
    best_iteration: int
    trained_tokens: int
    peak_memory_gb: float  # MLX peak memory during the run
    peak_rss_gb: float  # process peak resident memory during the run (Linux; else the lifetime peak)
    tokens_per_second: float  # median over reports
    seconds: float


def train(
    cfg: RunConfig,
    *,
    extra_callbacks: Iterable[TrainingCallback] = (),
    nested: bool = False,
    tags: Mapping[str, str] | None = None,
    extra_params: Mapping[str, object] | None = None,
    param_keys: Iterable[str] = (),
    stop_exceptions: Mapping[type[BaseException], str] | None = None,
) -> RunResult:
    """Run one LoRA fine-tuning job and record it in MLflow. Raises on failure (the run is marked FAILED).

    Params: ``KEY_SETTINGS`` and ``param_keys`` of the config, ``extra_params``, the model's size.
    ``stop_exceptions`` (exception type -> outcome) end the run KILLED (see ``tracking.tracked_run``);
    a run stopped early still gets its summary metrics and loss curve.
    Bad input (data, model, LoRA shape) fails before the MLflow run is opened: nothing is recorded.
    """
    tic = time.perf_counter()
    model_ref = model_path(cfg.model, cfg.paths.models)
    mx.random.seed(cfg.train.seed)
    model, tokenizer = load_model(cfg.model, cfg.paths.models)
    n_model = get_total_parameters(model)
    num_layers = add_lora(model, cfg)  # a LoRA shape the model cannot take fails before the data split is written
    split_dir = splits.prepare_from_config(cfg.data, cfg.paths.processed)
    with tracking.tracked_run(cfg.paths, cfg.experiment_name, cfg.run_name, nested=nested, tags=tags,
                              stop_exceptions=stop_exceptions) as run:
        tracking.log_config(cfg.raw, yaml.safe_dump(cfg.raw, sort_keys=False), (*KEY_SETTINGS, *param_keys))
        train_set, valid_set = load_datasets(cfg, split_dir, tokenizer, model_key=Path(model_ref).name)
        n_trainable = sum(v.size for _, v in tree_flatten(model.trainable_parameters()))
        tracking.record(params={"blas": blas.blas_in_use(), **(extra_params or {}), "split_dir": split_dir.name,
                                "model_parameters": n_model, "trainable_parameters": n_trainable,
                                "train_examples": len(train_set), "val_examples_used": len(valid_set)})
        print(f"medlora: run {run.info.run_id} | model {cfg.model.name} | {n_trainable:,} trainable params "
              f"in {num_layers} layers | {len(train_set)} train / {len(valid_set)} val examples | "
              f"BLAS {blas.blas_in_use()}", file=sys.stderr)
        history = History()
        try:
            with temporary_dir("adapters") as tmp:
                best = _fit(cfg, model, tokenizer, (train_set, valid_set), adapter_config(cfg, num_layers),
                            extra_callbacks, Path(tmp), history)
        finally:  # also when pruned, over the cap or failed: what was measured until then
            _log_summary(history, time.perf_counter() - tic, title=cfg.run_name or run.info.run_id)
        return _result(run.info.run_id, history, best, time.perf_counter() - tic)


def _fit(cfg: RunConfig, model, tokenizer, datasets, adapter_cfg: dict,
         extra_callbacks: Iterable[TrainingCallback], tmp: Path, history: History) -> BestAdapterKeeper:
    """mlx-lm's trainer with medlora's callbacks; the best and final adapters logged to the active run."""
    best = BestAdapterKeeper(model, tmp / "best", adapter_cfg)
    skip_first_eval = not cfg.train.validate_base  # mlx-lm's evaluation of the untrained model: one example, unused
    callbacks = CallbackList([
        MetricsLogger(history, skip_base=skip_first_eval),
        best,
        ProbeSampler(model, tokenizer, cfg.probes.questions, cfg.probes.max_tokens, cfg.data.system_prompt,
                     only_at=cfg.train.iters - 1 if cfg.probes.when == "last_eval" else None),
        *extra_callbacks,
    ])
    args = TrainingArgs(
        batch_size=cfg.train.batch_size,
        iters=cfg.train.iters,
        val_batches=-1,  # the whole (fixed) validation subset
        steps_per_report=cfg.train.steps_per_report,
        steps_per_eval=cfg.train.steps_per_eval,
        steps_per_save=cfg.train.iters + 1,  # adapters are kept by BestAdapterKeeper and saved at the end
        adapter_file=str(tmp / "final" / "adapters.safetensors"),
        max_seq_length=cfg.train.max_seq_length,
        grad_checkpoint=cfg.train.grad_checkpoint,
    )
    (tmp / "final").mkdir()
    optimizer = OPTIMIZERS[cfg.train.optimizer](learning_rate=learning_rate_schedule(cfg.train))
    loss, extend_train, extend_eval = training_loss(cfg.train, model, cfg.train.cache_frozen_prefix)
    reset_peaks()
    streams = min(cfg.train.cpu_streams, cfg.train.batch_size)
    with fast_kernels(model, cfg.train.fast_math), blas.threads((os.cpu_count() or 1) // streams), \
            training_table(skip_first_eval):
        mlx_train(model, optimizer, *datasets, args=args, loss=loss, training_callback=callbacks,
                  iterate_batches=batch_iterator(cfg.train.seed, cfg.train.eval_batch_size, extend_train, extend_eval,
                                                 skip_first_eval=skip_first_eval))
    save_adapter(model, tmp / "final", {**adapter_cfg, "iteration": cfg.train.iters})
    kill_point("log_artifacts")
    tracking.log_dir(tmp / "best", "adapters/best")
    tracking.log_dir(tmp / "final", "adapters/final")
    return best


def learning_rate_schedule(train_cfg):
    """``train.learning_rate`` as is (constant), or warm-up + cosine decay (mlx-lm's ``build_schedule``)."""
    if train_cfg.lr_schedule == "constant":
        return train_cfg.learning_rate
    warmup = int(train_cfg.warmup * train_cfg.iters)
    lr = train_cfg.learning_rate
    return build_schedule({"name": "cosine_decay", "warmup": warmup, "warmup_init": lr / 100,
                           "arguments": [lr, max(train_cfg.iters - warmup, 1), lr / 10]})


def _log_summary(history: History, seconds: float, title: str) -> None:
    """The run's summary metrics (those measured) and its loss curve."""
    metrics = {"run_seconds": seconds, "peak_rss_gb": peak_rss_gb(),
               "median_tokens_per_second": _median(history.tokens_per_second),
               "eval_seconds_mean": _mean(history.eval_seconds)}
    mlflow.log_metrics(shown({k: v for k, v in metrics.items() if math.isfinite(v)}))
    if history.train or history.val:
        mlflow.log_figure(loss_curve_figure(history, title=title), "loss_curve.png")


def _result(run_id: str, history: History, best: BestAdapterKeeper, seconds: float) -> RunResult:
    """The run's summary (its metrics are logged by the callbacks and ``_log_summary``)."""
    result = RunResult(
        run_id=run_id,
        first_val_loss=history.val[0][1] if history.val and history.val[0][0] == 0 else math.nan,
        final_val_loss=history.val[-1][1],
        best_val_loss=best.best_loss,
        best_iteration=best.best_iteration,
        trained_tokens=history.trained_tokens,
        peak_memory_gb=history.peak_memory_gb,
        peak_rss_gb=peak_rss_gb(),
        tokens_per_second=_median(history.tokens_per_second),
        seconds=seconds,
    )
    mlflow.log_metric("best_iteration", result.best_iteration)
    return result


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2] if values else math.nan


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan
