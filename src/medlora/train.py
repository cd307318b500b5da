"""One LoRA fine-tuning run, tracked in MLflow. Knows nothing of Optuna.

    prepare data -> fresh base model -> LoRA layers -> mlx_lm.tuner.train(callbacks)
    -> best and final adapters, samples, loss curve, metrics in one MLflow run

Extra callbacks (pruning, memory guard) are passed in by the caller.
"""

from __future__ import annotations

import math
import os
import random
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import mlflow
import mlx.core as mx
import mlx.optimizers as optim
from mlx.utils import tree_flatten
from mlx_lm.tuner.callbacks import TrainingCallback
from mlx_lm.tuner.trainer import TrainingArgs
from mlx_lm.tuner.trainer import iterate_batches as mlx_iterate_batches
from mlx_lm.tuner.trainer import train as mlx_train
from mlx_lm.tuner.utils import linear_to_lora_layers
from omegaconf import OmegaConf

from medlora import blas, data, models, tracking
from medlora.blas import blas_in_use
from medlora.callbacks import BestAdapterKeeper, CallbackList, History, MetricsLogger, ProbeSampler, save_adapter
from medlora.config import RunConfig
from medlora.datasets import cached_encode
from medlora.errors import UserError
from medlora.fastmath import fast_kernels
from medlora.faults import kill_point
from medlora.loss import training_loss
from medlora.memory import peak_rss_gb, reset_peaks
from medlora.report import loss_curve_figure

OPTIMIZERS = {"adam": optim.Adam, "adamw": optim.AdamW, "sgd": optim.SGD}


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


def lora_parameters(cfg: RunConfig) -> dict:
    lora = {"rank": cfg.lora.rank, "scale": cfg.lora.scale, "dropout": cfg.lora.dropout}
    if cfg.lora.keys:
        lora["keys"] = list(cfg.lora.keys)
    return lora


def adapter_config(cfg: RunConfig, num_layers: int) -> dict:
    """What ``mlx_lm.load(..., adapter_path=...)`` needs, plus the base model it belongs to."""
    return {
        "fine_tune_type": "lora",
        "num_layers": num_layers,
        "lora_parameters": lora_parameters(cfg),
        "base_model": cfg.model.name,
    }


def load_datasets(cfg: RunConfig, split_dir: Path, tokenizer, model_key: str):
    """Train set (the whole train split) and the fixed validation subset, tokenized once and cached."""
    valid_rows = data.load_split(split_dir, "valid")
    random.Random(cfg.data.seed).shuffle(valid_rows)
    encode = partial(cached_encode, tokenizer=tokenizer, cache_dir=split_dir / "tokenized",
                     mask_prompt=cfg.train.mask_prompt, max_seq_length=cfg.train.max_seq_length,
                     truncation=cfg.train.truncation)
    train_set = encode(data.load_split(split_dir, "train"), cache_key=f"train|{model_key}")
    valid_set = encode(valid_rows[: cfg.train.val_examples], cache_key=f"valid|{model_key}|{cfg.data.seed}")
    if len(train_set) < cfg.train.batch_size:
        raise UserError(
            f"train split has {len(train_set)} usable examples, fewer than train.batch_size={cfg.train.batch_size} "
            "(fix: lower train.batch_size or use a bigger data.csv)"
        )
    return train_set, valid_set


def batch_iterator(train_seed: int, eval_batch_size: int, extend_train=None, extend_eval=None):
    """mlx-lm's ``iterate_batches``, seeded; evaluation (``loop=False``) always uses the same batches.

    Validation runs with its own batch size so that its loss is over the same
    examples whatever the training batch size is. ``extend_*`` add what the loss needs
    beyond ``(batch, lengths)`` (see :func:`medlora.loss.training_loss`).
    """

    def iterate(dataset, batch_size, max_seq_length, loop=False, seed=None, comm_group=None):
        if not loop:
            batch_size = min(eval_batch_size, len(dataset))
        extend = (extend_train if loop else extend_eval) or (lambda batches: batches)
        return extend(mlx_iterate_batches(
            dataset, batch_size, max_seq_length, loop=loop, seed=train_seed if loop else 0, comm_group=comm_group
        ))

    return iterate


def add_lora(model, cfg: RunConfig) -> int:
    """Freeze the base model and add LoRA layers to its last ``lora.num_layers`` blocks; return that count."""
    n_blocks = len(model.layers)
    num_layers = n_blocks if cfg.lora.num_layers == -1 else cfg.lora.num_layers
    if num_layers > n_blocks:
        raise UserError(
            f"lora.num_layers={num_layers} but model {cfg.model.name} has {n_blocks} layers "
            f"(fix: lora.num_layers={n_blocks} or fewer, or -1 for all)"
        )
    model.freeze()
    linear_to_lora_layers(model, num_layers, lora_parameters(cfg))
    return num_layers


def train(
    cfg: RunConfig,
    *,
    extra_callbacks: Iterable[TrainingCallback] = (),
    nested: bool = False,
    tags: Mapping[str, str] | None = None,
    extra_params: Mapping[str, object] | None = None,
    stop_exceptions: tuple[type[BaseException], ...] = (),
) -> RunResult:
    """Run one LoRA fine-tuning job and record it in MLflow. Raises on failure (the run is marked FAILED).

    Bad input (data, model, LoRA shape) fails before the MLflow run is opened: nothing is recorded.
    """
    tic = time.perf_counter()
    split_dir = data.prepare_from_config(cfg.data, cfg.paths.processed)
    model_ref = models.model_path(cfg.model, cfg.paths.models)
    mx.random.seed(cfg.train.seed)
    model, tokenizer = models.load_model(cfg.model, cfg.paths.models)
    num_layers = add_lora(model, cfg)
    with tracking.tracked_run(cfg.paths, cfg.experiment_name, cfg.run_name, nested=nested, tags=tags,
                              stop_exceptions=stop_exceptions) as run:
        tracking.log_config(cfg.raw, OmegaConf.to_yaml(OmegaConf.create(cfg.raw)))
        mlflow.log_params({"blas": blas_in_use(), **(extra_params or {})})
        train_set, valid_set = load_datasets(cfg, split_dir, tokenizer, model_key=Path(model_ref).name)
        n_trainable = sum(v.size for _, v in tree_flatten(model.trainable_parameters()))
        mlflow.log_params({"split_dir": split_dir.name, "trainable_parameters": n_trainable,
                           "train_examples": len(train_set), "val_examples_used": len(valid_set)})
        print(f"medlora: run {run.info.run_id} | model {cfg.model.name} | {n_trainable:,} trainable params "
              f"in {num_layers} layers | {len(train_set)} train / {len(valid_set)} val examples | "
              f"BLAS {blas_in_use()}", file=sys.stderr)

        adapter_cfg = adapter_config(cfg, num_layers)
        history = History()
        with tempfile.TemporaryDirectory(prefix="medlora-adapters-") as tmp:
            best = BestAdapterKeeper(model, Path(tmp) / "best", adapter_cfg)
            callbacks = CallbackList([
                MetricsLogger(history),
                best,
                ProbeSampler(model, tokenizer, cfg.probes.questions, cfg.probes.max_tokens, cfg.data.system_prompt),
                *extra_callbacks,
            ])
            args = TrainingArgs(
                batch_size=cfg.train.batch_size,
                iters=cfg.train.iters,
                val_batches=-1,  # the whole (fixed) validation subset
                steps_per_report=cfg.train.steps_per_report,
                steps_per_eval=cfg.train.steps_per_eval,
                steps_per_save=cfg.train.iters + 1,  # adapters are kept by BestAdapterKeeper and saved at the end
                adapter_file=str(Path(tmp) / "final" / "adapters.safetensors"),
                max_seq_length=cfg.train.max_seq_length,
                grad_checkpoint=cfg.train.grad_checkpoint,
            )
            (Path(tmp) / "final").mkdir()
            optimizer = OPTIMIZERS[cfg.train.optimizer](learning_rate=cfg.train.learning_rate)
            loss, extend_train, extend_eval = training_loss(cfg.train, model)
            reset_peaks()
            streams = min(cfg.train.cpu_streams, cfg.train.batch_size)
            with fast_kernels(model, cfg.train.fast_math), blas.threads((os.cpu_count() or 1) // streams):
                mlx_train(
                    model, optimizer, train_set, valid_set, args=args, loss=loss,
                    iterate_batches=batch_iterator(cfg.train.seed, cfg.train.eval_batch_size, extend_train,
                                                   extend_eval),
                    training_callback=callbacks,
                )
            save_adapter(model, Path(tmp) / "final", {**adapter_cfg, "iteration": cfg.train.iters})
            kill_point("log_artifacts")
            tracking.log_dir(Path(tmp) / "best", "adapters/best")
            tracking.log_dir(Path(tmp) / "final", "adapters/final")

        mlflow.log_figure(loss_curve_figure(history, title=cfg.run_name or run.info.run_id), "loss_curve.png")
        result = RunResult(
            run_id=run.info.run_id,
            first_val_loss=history.val[0][1],
            final_val_loss=history.val[-1][1],
            best_val_loss=best.best_loss,
            best_iteration=best.best_iteration,
            trained_tokens=history.trained_tokens,
            peak_memory_gb=history.peak_memory_gb,
            peak_rss_gb=peak_rss_gb(),
            tokens_per_second=_median(history.tokens_per_second),
            seconds=time.perf_counter() - tic,
        )
        mlflow.log_metrics({
            "best_val_loss": result.best_val_loss, "best_iteration": result.best_iteration,
            "run_seconds": result.seconds, "peak_rss_gb": result.peak_rss_gb,
            "median_tokens_per_second": result.tokens_per_second, "eval_seconds_mean": _mean(history.eval_seconds),
        })
        return result


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2] if values else math.nan


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan
