"""One trial: sample a configuration, check it fits the memory cap, train it, report back.

    sample params (the space trimmed to the cap: medlora.study.space) -> RunConfig
        (with a fidelity: train.iters and train.steps_per_eval from the rungs and the batch size)
    -> predicted peak memory
        over the cap?   never trained (only where the trimming cannot see it): constraint = predicted - cap,
                        recorded, pruned
        otherwise       train (nested MLflow run) with a pruning callback and a memory guard
                        -> value = best validation loss, constraint = measured peak - cap
                        -> (study.answers) the best adapter answers the study's questions: scores as user
                           attributes, compared with the base model's (medlora.study.answer_check)
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import mlflow
import optuna
import yaml
from mlx_lm.tuner.callbacks import TrainingCallback

from medlora import liveness, tracking
from medlora.config import RunConfig, StudyConfig, TrainConfig, load_run_config
from medlora.config.secrets import mask
from medlora.study import answer_check, bracket
from medlora.study.space import suggest_all
from medlora.training import memory, memory_guard
from medlora.training.run import KEY_SETTINGS, train


class PruningCallback(TrainingCallback):
    """Report every validation loss to the trial; raise ``TrialPruned`` when the pruner says so.

    Without a fidelity the step reported is the iteration. With one it is the rung in examples
    (steps x batch size), so trials of different batch sizes meet at the same rungs: mlx-lm validates
    *before* the step whose number is a multiple of ``train.steps_per_eval``, so every trial's value for
    a rung is measured one step before that step completes it.

    The value reported is the trial's best validation loss so far, not the last one: its adapter is kept at
    its best step, so that is what it delivers if stopped there, and one noisy evaluation at a rung (a
    batch-2 trial went 2.07 -> 2.14 between two evaluations 32 examples apart) does not decide its fate.
    A NaN (diverged) is reported as it is: the pruners stop it."""

    def __init__(self, trial: optuna.Trial, examples_per_step: int | None = None,
                 why: str = "the median of earlier trials", last_rung: float = float("inf"), screened: str = ""):
        self.trial, self.examples_per_step, self.why, self.last_rung = trial, examples_per_step, why, last_rung
        self.best, self.screened = float("inf"), screened

    def on_val_loss_report(self, info: dict) -> None:
        if info["iteration"] == 0:
            return  # the base model: the same loss in every trial
        step = info["iteration"] if self.examples_per_step is None else (info["iteration"] + 1) * self.examples_per_step
        loss = info["val_loss"]
        self.best = loss if math.isnan(loss) else min(self.best, loss)
        self.trial.report(self.best, step=step)
        if step < self.last_rung and self.trial.should_prune():  # a trial at the top rung has paid: it completes
            where = f"iteration {step}" if self.examples_per_step is None else f"{step} examples"
            if self.screened and not math.isnan(self.best):
                raise optuna.TrialPruned(f"screened: best val loss {self.best:.3f} at {where} ({self.screened})")
            raise optuna.TrialPruned(f"best val loss {self.best:.3f} up to {where} is worse than {self.why}")


@dataclass(frozen=True)
class StudyContext:
    study_cfg: StudyConfig
    base_overrides: tuple[str, ...]  # the user's command-line overrides (minus study.*)
    memory_model: memory.MemoryModel
    defaults: TrainConfig  # the run config's train section (with the study's trial overrides): what is not searched
    asked: answer_check.Questions | None = None  # study.answers: what every complete trial answers


def trial_overrides(ctx: StudyContext, params: dict) -> list[str]:
    """The overrides of one trial: the user's, the study's, the drawn values, and (with a fidelity) the
    iterations and evaluation interval that make the rungs whole numbers of examples for its batch size."""
    overrides = [*ctx.base_overrides, *ctx.study_cfg.trial_overrides, *(f"{k}={v}" for k, v in params.items())]
    fidelity = ctx.study_cfg.fidelity
    if fidelity is not None:
        batch = params.get("train.batch_size", ctx.defaults.batch_size)
        overrides += [f"train.iters={-(-fidelity.max_examples // batch)}",
                      f"train.steps_per_eval={max(1, fidelity.min_examples // batch)}"]
    return overrides


def lora_layers(cfg: RunConfig, n_blocks: int) -> int:
    return n_blocks if cfg.lora.num_layers == -1 else cfg.lora.num_layers


def objective(trial: optuna.Trial, ctx: StudyContext, n_blocks: int) -> float:
    trial.set_user_attr("worker", liveness.me())  # first: a rerun on this host can tell at once that it died
    role = bracket.assign(trial, bracket.size(ctx.study_cfg))
    cap = ctx.study_cfg.memory_cap_gb
    params = suggest_all(trial, ctx.study_cfg, ctx.memory_model, ctx.defaults, n_blocks)
    overrides = trial_overrides(ctx, params)
    trial.set_user_attr("overrides", [mask(o) for o in overrides])  # what reproduces it, passwords masked
    cfg = load_run_config(overrides + [f"run_name={trial_run_name(ctx.study_cfg.name, trial.number)}",
                                       f"experiment_name={ctx.study_cfg.name}"])
    predicted = ctx.memory_model.predict_gb(cfg.train.batch_size, cfg.train.max_seq_length,
                                            lora_layers(cfg, n_blocks))
    trial.set_user_attr("predicted_peak_gb", round(predicted, 4))
    tags = {"study": ctx.study_cfg.name, "trial_number": str(trial.number), "role": "trial"}
    summary = ", ".join(f"{k.split('.')[-1]}={v:.3g}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}"
                        for k, v in params.items())

    if predicted > cap:
        skip_infeasible(trial, cfg, tags, predicted, cap, summary)

    print(f"medlora: trial {trial.number} ({summary}), predicted peak {predicted:.2f} GB", file=sys.stderr)
    try:
        result = train(
            cfg, nested=True, tags=tags,
            extra_callbacks=[pruning_callback(trial, ctx, cfg, role), memory_guard.MemoryGuard(cap)],
            extra_params={"trial_number": trial.number, "predicted_peak_gb": round(predicted, 4)},
            param_keys=params,
            stop_exceptions={optuna.TrialPruned: "pruned", memory_guard.MemoryCapExceeded: "over cap"},
        )
    except memory_guard.MemoryCapExceeded as over:
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
    if ctx.asked is not None:
        answer_check.score_trial(trial, cfg, result.run_id, ctx.asked, ctx.study_cfg.answers)
    return result.best_val_loss


def pruning_callback(trial: optuna.Trial, ctx: StudyContext, cfg: RunConfig, role: str | None = None) -> PruningCallback:
    if ctx.study_cfg.fidelity is None:
        return PruningCallback(trial)
    fidelity = ctx.study_cfg.fidelity
    screened = (f"the first {fidelity.first_bracket} configurations are compared here; the best 1 in "
                f"{fidelity.reduction_factor} are trained again to go on" if role == "screen" else "")
    return PruningCallback(trial, cfg.train.batch_size, last_rung=fidelity.max_examples, screened=screened,
                           why=f"the best 1 in {fidelity.reduction_factor} of the trials that reached this rung")


def skip_infeasible(trial: optuna.Trial, cfg: RunConfig, tags: dict, predicted: float, cap: float,
                    summary: str) -> None:
    """Record a trial predicted over the cap as never trained (constraint, tags, a run) and prune it."""
    reason = f"predicted peak {predicted:.2f} GB > cap {cap:.2f} GB: not trained"
    trial.set_constraint("memory_gb", predicted - cap)
    set_user_attrs(trial, {"state": "INFEASIBLE", "reason": reason})
    print(f"medlora: trial {trial.number} ({summary}) skipped: {reason}", file=sys.stderr)
    # a run that never trained ends KILLED (outcome "infeasible"), not FINISHED like a success
    with tracking.tracked_run(cfg.paths, cfg.experiment_name, cfg.run_name, nested=True,
                              tags={**tags, "trial_state": "INFEASIBLE"},
                              stop_exceptions={optuna.TrialPruned: "infeasible"}):
        tracking.log_config(cfg.raw, yaml.safe_dump(cfg.raw, sort_keys=False), (*KEY_SETTINGS, *trial.params))
        tracking.record(params={"trial_number": trial.number, "predicted_peak_gb": round(predicted, 4)})
        mlflow.log_metrics({"predicted_peak_gb": predicted, "memory_cap_gb": cap})
        raise optuna.TrialPruned(reason)


def trial_run_name(study: str, number: int) -> str:
    """``default/trial-003``: the MLflow run name says which study, wherever it is shown (registry, search)."""
    return f"{study}/trial-{number:03d}"


def set_user_attrs(trial: optuna.Trial, attrs: dict) -> None:
    for key, value in attrs.items():
        trial.set_user_attr(key, value)


def mlx_peak_gb() -> float:
    import mlx.core as mx

    return mx.get_peak_memory() / memory_guard.GB
