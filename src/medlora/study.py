"""The Optuna study: sample a configuration, check it fits the memory cap, train it, report back.

    for each trial:  sample params (conf/study) -> RunConfig -> predicted peak memory
        over the cap?   never trained: constraint = predicted - cap, recorded, pruned
        otherwise       train (nested MLflow run) with a pruning callback and a memory guard
                        -> value = best validation loss, constraint = measured peak - cap

Storage is any Optuna RDB URL (sqlite by default), with a heartbeat so that a
trial whose process died is marked FAILED and retried. Running the same command
again resumes the study until ``n_trials`` trials have finished.
"""

from __future__ import annotations

import math
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import mlflow
import optuna
from mlx_lm.tuner.callbacks import TrainingCallback
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from medlora import data, memory, report, tracking
from medlora.config import ParamSpec, RunConfig, StudyConfig, load_run_config
from medlora.errors import UserError
from medlora.train import train

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# A worker stops when finished trials plus those other workers are running reach n_trials, so several
# workers (or a resumed one) share one total instead of each running n_trials of their own.
COUNTED = (*FINISHED, TrialState.RUNNING)


class PruningCallback(TrainingCallback):
    """Report every validation loss to the trial; raise ``TrialPruned`` when the pruner says so."""

    def __init__(self, trial: optuna.Trial):
        self.trial = trial

    def on_val_loss_report(self, info: dict) -> None:
        self.trial.report(info["val_loss"], step=info["iteration"])
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"val loss {info['val_loss']:.3f} at iteration {info['iteration']} "
                                     "is worse than the median of earlier trials")


@dataclass(frozen=True)
class StudyContext:
    study_cfg: StudyConfig
    base_overrides: tuple[str, ...]  # the user's command-line overrides (minus study.*)
    memory_model: memory.MemoryModel


def open_storage(url: str, heartbeat_seconds: int = 20, grace_seconds: int = 60) -> optuna.storages.BaseStorage:
    """An Optuna storage: ``journal:<file>`` (Optuna's journal file, several workers on one machine)
    or any SQLAlchemy URL (sqlite, PostgreSQL for workers on several machines; with a heartbeat)."""
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock, JournalStorage

        path = Path(url[len("journal:"):]).expanduser()
        if not path.parent.is_dir():
            raise UserError(f"cannot open the study storage {url!r}: folder {path.parent} does not exist "
                            "(fix: create it, or point study.storage elsewhere)")
        return JournalStorage(JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path))))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(
                url,
                heartbeat_interval=heartbeat_seconds,  # seconds between "still alive" beats of a running trial
                grace_period=grace_seconds,  # a trial silent this long is marked FAILED ...
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=2),  # ... and retried
            )
    except Exception as err:  # SQLAlchemy's OperationalError, ArgumentError, missing driver, ...
        raise UserError(f"cannot open the study storage {url!r}: {str(err).splitlines()[0]} "
                        "(fix: check study.storage, the database server and its credentials)") from None


def make_sampler(cfg: dict) -> optuna.samplers.BaseSampler:
    if cfg["name"] == "random":
        return optuna.samplers.RandomSampler(seed=cfg.get("seed"))
    return optuna.samplers.TPESampler(seed=cfg.get("seed"), n_startup_trials=cfg.get("n_startup_trials", 4))


def make_pruner(cfg: dict) -> optuna.pruners.BasePruner:
    if cfg["name"] == "none":
        return optuna.pruners.NopPruner()
    if cfg["name"] == "threshold":  # prune any trial whose val loss is above `upper`
        return optuna.pruners.ThresholdPruner(upper=cfg["upper"], n_warmup_steps=cfg.get("n_warmup_steps", 1))
    # n_min_trials: prune at a step only against that many completed trials that reached it; with 1,
    # the first long trial alone is "the median" at every step shorter trials never reach
    return optuna.pruners.MedianPruner(n_startup_trials=cfg.get("n_startup_trials", 2),
                                       n_warmup_steps=cfg.get("n_warmup_steps", 1),
                                       n_min_trials=cfg.get("n_min_trials", 1))


def existing_study(study_cfg: StudyConfig) -> optuna.Study:
    """An existing study, read-only use (report, promote); never creates storage or a study."""
    missing = UserError(f"no study named {study_cfg.name!r} in {study_cfg.storage} "
                        f"(fix: check study.name, or run `medlora sweep study.name={study_cfg.name}` first)")
    for prefix in ("sqlite:///", "journal:"):
        if study_cfg.storage.startswith(prefix) and not Path(study_cfg.storage[len(prefix):]).exists():
            raise missing
    try:
        return optuna.load_study(study_name=study_cfg.name, storage=open_storage(study_cfg.storage))
    except KeyError:
        raise missing from None


def load_study(study_cfg: StudyConfig) -> optuna.Study:
    """Create or resume the study (creating its folder only once the storage has opened)."""
    if str(study_cfg.dir.resolve()) in study_cfg.storage:  # the default: a storage file inside the study folder
        study_cfg.dir.mkdir(parents=True, exist_ok=True)
    storage = open_storage(study_cfg.storage, study_cfg.heartbeat_seconds, study_cfg.grace_seconds)
    study_cfg.dir.mkdir(parents=True, exist_ok=True)
    return optuna.create_study(
        study_name=study_cfg.name,
        storage=storage,
        sampler=make_sampler(study_cfg.sampler),
        pruner=make_pruner(study_cfg.pruner),
        direction="minimize",
        load_if_exists=True,
    )


def suggest(trial: optuna.Trial, spec: ParamSpec):
    if spec.type == "categorical":
        return trial.suggest_categorical(spec.key, list(spec.choices))
    if spec.type == "int":
        return trial.suggest_int(spec.key, int(spec.low), int(spec.high), step=int(spec.step or 1), log=spec.log)
    return trial.suggest_float(spec.key, float(spec.low), float(spec.high), step=spec.step, log=spec.log)


def trial_overrides(ctx: StudyContext, params: dict) -> list[str]:
    return [*ctx.base_overrides, *ctx.study_cfg.trial_overrides, *(f"{k}={v}" for k, v in params.items())]


def lora_layers(cfg: RunConfig, n_blocks: int) -> int:
    return n_blocks if cfg.lora.num_layers == -1 else cfg.lora.num_layers


def objective(trial: optuna.Trial, ctx: StudyContext, n_blocks: int) -> float:
    cap = ctx.study_cfg.memory_cap_gb
    params = {spec.key: suggest(trial, spec) for spec in ctx.study_cfg.search_space}
    overrides = trial_overrides(ctx, params)
    trial.set_user_attr("overrides", overrides)
    cfg = load_run_config(overrides + [f"run_name=trial-{trial.number:03d}",
                                       f"experiment_name={ctx.study_cfg.name}"])
    predicted = ctx.memory_model.predict_gb(cfg.train.batch_size, cfg.train.max_seq_length,
                                            lora_layers(cfg, n_blocks))
    trial.set_user_attr("predicted_peak_gb", round(predicted, 4))
    tags = {"study": ctx.study_cfg.name, "trial_number": str(trial.number)}
    summary = ", ".join(f"{k.split('.')[-1]}={v:.3g}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}"
                        for k, v in params.items())

    if predicted > cap:
        reason = f"predicted peak {predicted:.2f} GB > cap {cap:.2f} GB: not trained"
        trial.set_constraint("memory_gb", predicted - cap)
        trial.set_user_attr("state", "INFEASIBLE")
        trial.set_user_attr("reason", reason)
        with tracking.tracked_run(cfg.paths, cfg.experiment_name, cfg.run_name, nested=True,
                                  tags={**tags, "trial_state": "INFEASIBLE", "stopped": reason}):
            tracking.log_config(cfg.raw, "")
            mlflow.log_metrics({"predicted_peak_gb": predicted, "memory_cap_gb": cap})
        print(f"medlora: trial {trial.number} ({summary}) skipped: {reason}", file=sys.stderr)
        raise optuna.TrialPruned(reason)

    print(f"medlora: trial {trial.number} ({summary}), predicted peak {predicted:.2f} GB", file=sys.stderr)
    try:
        result = train(
            cfg, nested=True, tags=tags,
            extra_callbacks=[PruningCallback(trial), memory.MemoryGuard(cap)],
            extra_params={"trial_number": trial.number, "predicted_peak_gb": round(predicted, 4)},
            stop_exceptions=(optuna.TrialPruned, memory.MemoryCapExceeded),
        )
    except memory.MemoryCapExceeded as over:
        trial.set_constraint("memory_gb", over.peak_gb - cap)
        set_user_attrs(trial, {"state": "OVER_CAP", "reason": str(over), "measured_peak_gb": over.peak_gb})
        raise optuna.TrialPruned(str(over)) from None
    except optuna.TrialPruned as pruned:
        peak = mlx_peak_gb()
        trial.set_constraint("memory_gb", peak - cap)
        set_user_attrs(trial, {"state": "PRUNED", "reason": str(pruned), "measured_peak_gb": peak})
        raise
    trial.set_constraint("memory_gb", result.peak_memory_gb - cap)
    set_user_attrs(trial, {
        "state": "COMPLETE", "run_id": result.run_id, "measured_peak_gb": result.peak_memory_gb,
        "peak_rss_gb": result.peak_rss_gb, "trained_tokens": result.trained_tokens,
        "seconds": round(result.seconds, 1), "best_iteration": result.best_iteration,
    })
    mlflow.log_metrics({"trial_value": result.best_val_loss}, run_id=result.run_id)
    return result.best_val_loss


def close_orphaned_runs(study: optuna.Study, parent_run_id: str) -> None:
    """Child runs left RUNNING by a process that died: their trial is FAILED now, so the run is too."""
    from mlflow.tracking import MlflowClient

    failed = {str(t.number) for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))}
    client = MlflowClient()
    run = client.get_run(parent_run_id)
    orphans = client.search_runs(
        [run.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}' and attributes.status = 'RUNNING'",
    )
    for orphan in orphans:
        if orphan.data.tags.get("trial_number") in failed:
            client.set_tag(orphan.info.run_id, "error", "the process running this trial died; the trial was "
                                                        "failed by its heartbeat and retried")
            client.set_terminated(orphan.info.run_id, status="FAILED")


def set_user_attrs(trial: optuna.Trial, attrs: dict) -> None:
    for key, value in attrs.items():
        trial.set_user_attr(key, value)


def mlx_peak_gb() -> float:
    import mlx.core as mx

    return mx.get_peak_memory() / memory.GB


def finished_count(study: optuna.Study, states=FINISHED) -> int:
    return len(study.get_trials(deepcopy=False, states=states))


def baseline_params(study_cfg: StudyConfig, run_cfg: RunConfig) -> dict:
    """The run config's own values for the searched keys, moved into the search space where they fall outside."""
    params = {}
    for spec in study_cfg.search_space:
        section, _, name = spec.key.partition(".")
        value = run_cfg.raw.get(section, {}).get(name)
        if spec.type == "categorical":
            if value in spec.choices:
                params[spec.key] = value
            continue
        value = min(max(value, spec.low), spec.high)
        if spec.step:
            value = spec.low + round((value - spec.low) / spec.step) * spec.step
        params[spec.key] = int(value) if spec.type == "int" else float(value)
    return params


def run_study(study_cfg: StudyConfig, run_cfg: RunConfig, base_overrides: list[str]) -> optuna.Study:
    """Create or resume the study and run trials until ``n_trials`` have finished (or the timeout).

    Everything a user can get wrong (data, model, search space, a cap below the model) is checked
    before the study, its storage or its MLflow run is created.
    """
    data.prepare_from_config(run_cfg.data, run_cfg.paths.processed)
    n_blocks = _count_blocks(run_cfg)
    max_layers = _max_value(study_cfg, "lora.num_layers", run_cfg.lora.num_layers)
    if max_layers > n_blocks:
        raise UserError(f"the search space reaches lora.num_layers={max_layers} but model {run_cfg.model.name} "
                        f"has {n_blocks} layers (fix: lower the search space's lora.num_layers high to {n_blocks})")
    # Calibrate on what trials run: the user's overrides plus the study's trial overrides.
    probe_cfg = load_run_config([*base_overrides, *study_cfg.trial_overrides])
    cache_file = study_cfg.dir / "memory_model.json"
    print(f"medlora: memory model for the cap ({cache_file}) ...", file=sys.stderr)
    mem = memory.load_or_calibrate(probe_cfg, n_blocks if max_layers == -1 else max_layers, cache_file)
    if mem.base_gb * memory.SAFETY > study_cfg.memory_cap_gb:
        raise UserError(f"study.memory_cap_gb={study_cfg.memory_cap_gb} is smaller than the model itself "
                        f"({mem.base_gb:.2f} GB before any activations) (fix: study.memory_cap_gb="
                        f"{math.ceil(mem.base_gb * 2 * 10) / 10} or more, or a smaller model)")
    study = load_study(study_cfg)
    memory.save(mem, cache_file)
    if study_cfg.enqueue_baseline and not study.get_trials(deepcopy=False):
        # trial 0 is the run config as it stands, so the study shows what searching gained over it
        study.enqueue_trial(baseline_params(study_cfg, run_cfg), user_attrs={"baseline": True})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # trials whose process died: FAILED now, retried below
    ctx = StudyContext(study_cfg, tuple(base_overrides), mem)

    tracking.experiment_id(run_cfg.paths, study_cfg.name)
    parent_id = study.user_attrs.get("mlflow_parent_run_id")
    with tracking.tracked_run(run_cfg.paths, study_cfg.name, f"study-{study_cfg.name}", run_id=parent_id,
                              tags={"study": study_cfg.name, "role": "study"}) as parent:
        close_orphaned_runs(study, parent.info.run_id)
        if parent_id is None:
            study.set_user_attr("mlflow_parent_run_id", parent.info.run_id)
            mlflow.log_params({"memory_cap_gb": study_cfg.memory_cap_gb, "n_trials": study_cfg.n_trials,
                               "storage": study_cfg.storage, **{f"memory_model.{k}": v for k, v in
                                                                 mem.__dict__.items()}})
        remaining = study_cfg.n_trials - finished_count(study, COUNTED)
        if remaining > 0:
            print(f"medlora: study {study_cfg.name}: {finished_count(study)} trials finished, running up to "
                  f"{remaining} more (cap {study_cfg.memory_cap_gb} GB)", file=sys.stderr)
            study.optimize(
                lambda trial: objective(trial, ctx, n_blocks),
                timeout=study_cfg.timeout_minutes * 60,
                callbacks=[optuna.study.MaxTrialsCallback(study_cfg.n_trials, states=COUNTED)],
                catch=(),
                gc_after_trial=True,
            )
        report.write_study_outputs(study, study_cfg, parent_run=True)
    return study


def _count_blocks(cfg: RunConfig) -> int:
    import json
    from pathlib import Path

    from medlora import models

    config = json.loads((Path(models.model_path(cfg.model, cfg.paths.models)) / "config.json").read_text())
    return int(config["num_hidden_layers"])


def _max_value(study_cfg: StudyConfig, key: str, default: int) -> int:
    for spec in study_cfg.search_space:
        if spec.key == key:
            return int(max(spec.choices) if spec.type == "categorical" else spec.high)
    return default
