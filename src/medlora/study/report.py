"""A study's outputs: trials.csv, best.yaml and figures/, from its Optuna storage.

Built on Optuna's own pieces (``trials_dataframe``, ``best_trial``, which skips trials that
break a constraint, and ``optuna.visualization.matplotlib``); medlora adds its trial states
(INFEASIBLE, OVER_CAP: pruned in Optuna's terms) and the predicted-vs-measured memory plot.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402
import pandas as pd  # noqa: E402
import yaml  # noqa: E402
from optuna.trial import TrialState  # noqa: E402
from optuna.visualization import matplotlib as ov  # noqa: E402

from medlora.config import StudyConfig  # noqa: E402
from medlora.config.secrets import MASK  # noqa: E402
from medlora.errors import UserError  # noqa: E402
from medlora.files import write_file  # noqa: E402

TRIAL_COLUMNS = ["number", "state", "value", "answer_similarity", "answer_similarity_vs_base", "answer_repetition",
                 "answer_words", "baseline", "bracket", "promoted_from", "predicted_peak_gb", "measured_peak_gb",
                 "peak_rss_gb", "trained_tokens", "seconds", "reason", "run_id"]


def trial_state(trial) -> str:
    """COMPLETE / PRUNED / INFEASIBLE / OVER_CAP / FAILED / RUNNING, as medlora names them."""
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return trial.user_attrs.get("state", trial.state.name)
    return trial.state.name


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per trial: state, value, predicted and measured peak memory, tokens, seconds, params."""
    frame = study.trials_dataframe(attrs=("number", "value", "duration", "params", "user_attrs"))
    if frame.empty:
        return pd.DataFrame(columns=TRIAL_COLUMNS)
    frame.columns = [c.removeprefix("user_attrs_").removeprefix("params_") for c in frame.columns]
    frame["state"] = [trial_state(t) for t in study.get_trials(deepcopy=False)]
    frame["baseline"] = frame.get("baseline", pd.Series(False, index=frame.index)).fillna(False).astype(bool)
    for column in TRIAL_COLUMNS:
        if column not in frame:
            frame[column] = None
    if "duration" in frame:  # trials that set no `seconds` (failed, infeasible): their wall time
        frame["seconds"] = frame["seconds"].fillna(frame["duration"].dt.total_seconds().round(1))
    params = sorted({p for t in study.get_trials(deepcopy=False) for p in t.params})
    return frame[TRIAL_COLUMNS + params]


def best_trial(study: optuna.Study, objective: str = "loss"):
    """The best COMPLETE trial within the memory cap, or None.

    ``loss``: the lowest validation loss (Optuna's ``best_trial``, which honours constraints).
    ``similarity``: of the trials whose answers were scored on the study's current questions (the base
    model's signature), the highest mean similarity (ties: the lower loss); the lowest loss when none was."""
    try:
        by_loss = study.best_trial
    except ValueError:  # no complete feasible trial yet
        return None
    if objective != "similarity":
        return by_loss
    asked = (study.user_attrs.get("answer_check_base") or {}).get("signature")
    if asked is None:
        return by_loss
    scored = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
              if (t.user_attrs.get("answer_scores") or {}).get("signature") == asked
              and all(c <= 0 for c in t.system_attrs.get("constraints", ()))]  # within the memory cap
    return max(scored, key=lambda t: (t.user_attrs["answer_similarity"], -t.value), default=by_loss)


def val_curves_figure(study: optuna.Study):
    """Optuna's intermediate-values plot, its y axis clipped so that a diverged trial flattens no other."""
    fig = optuna_figure(ov.plot_intermediate_values, study)
    if fig is None:
        return None
    values = sorted(v for t in study.get_trials(deepcopy=False) for v in t.intermediate_values.values())
    ax = fig.axes[0]
    if values:
        ax.set_ylim(values[0] * 0.97, min(values[-1], values[len(values) // 2] * 1.6) * 1.01)
    ax.set_xlabel("iteration")
    ax.set_ylabel("validation loss")
    ax.set_title("Validation loss of every trial (iteration 0 = the base model)")
    return fig


def memory_figure(frame: pd.DataFrame, cap_gb: float):
    fig, ax = plt.subplots(figsize=(6, 5), dpi=110)
    ran = frame[frame["measured_peak_gb"].notna()] if not frame.empty else frame
    skipped = frame[frame["state"] == "INFEASIBLE"] if not frame.empty else frame
    if len(ran):
        ax.scatter(ran["predicted_peak_gb"], ran["measured_peak_gb"], label="trained", color="tab:blue")
        for _, r in ran.iterrows():
            ax.annotate(f"#{r['number']}", (r["predicted_peak_gb"], r["measured_peak_gb"]), fontsize=7)
    if len(skipped):
        ax.scatter(skipped["predicted_peak_gb"], [cap_gb] * len(skipped), marker="x", color="tab:red",
                   label="predicted over cap (never trained)")
    values = [v for v in [*frame.get("predicted_peak_gb", []), *frame.get("measured_peak_gb", []), cap_gb]
              if v is not None and v == v]
    hi = max(values) * 1.1 if values else cap_gb * 1.2
    ax.plot([0, hi], [0, hi], ls=":", color="gray", label="measured = predicted")
    ax.axhline(cap_gb, color="tab:red", ls="--", label=f"cap {cap_gb:g} GB")
    ax.axvline(cap_gb, color="tab:red", ls="--", alpha=0.4)
    ax.set_xlim(0, hi)
    ax.set_ylim(0, hi)
    ax.set_xlabel("predicted peak (GB)")
    ax.set_ylabel("measured MLX peak (GB)")
    ax.set_title("Memory: predicted vs measured")
    ax.legend(fontsize=7)
    fig.tight_layout()
    plt.close(fig)
    return fig


def optuna_figure(plot_fn, study: optuna.Study):
    """An ``optuna.visualization.matplotlib`` plot as a Figure (None when it has too few trials).

    Too few also when Optuna plots anyway but warns that the figure says nothing: parameter
    importances from one complete trial are all "equal" (zero), a bar chart of nothing.
    """
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return None  # Optuna would log a warning and draw empty axes
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ax = plot_fn(study)
        except (ValueError, RuntimeError):
            return None
    if any("will be equal" in str(w.message) for w in caught):
        plt.close(ax.figure)
        return None
    fig = ax.figure
    fig.set_size_inches(7, 4.5)
    fig.tight_layout()
    plt.close(fig)
    return fig


def best_yaml(study: optuna.Study, trial) -> str:
    """A file `medlora train --from FILE` reads: the overrides that reproduce ``trial``."""
    overrides = list(trial.user_attrs.get("overrides", []))
    scored = (f", answer similarity {trial.user_attrs['answer_similarity']:.3f}"
              if "answer_similarity" in trial.user_attrs else "")
    header = (f"# Best trial #{trial.number} of study {study.study_name}: best validation loss {trial.value:.4f}"
              f"{scored}\n"
              f"# Reproduce it with:  medlora train --from <this file>\n")
    return header + yaml.safe_dump({"overrides": overrides, "trial": trial.number, "value": float(trial.value),
                                    "params": dict(trial.params)}, sort_keys=False)


def overrides_from_file(path: str) -> list[str]:
    """The ``overrides`` list of a best.yaml (:func:`best_yaml`), less those whose password was masked."""
    try:
        overrides = yaml.safe_load(Path(path).read_text())["overrides"]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as err:
        raise UserError(f"cannot read overrides from {path} ({type(err).__name__}) "
                        "(fix: pass a best.yaml written by `medlora sweep` or `medlora report`)") from None
    kept = [str(o) for o in overrides if f":{MASK}@" not in str(o)]
    for dropped in (str(o) for o in overrides if f":{MASK}@" in str(o)):  # never stored: the user passes it again
        print(f"medlora: note: {dropped.split('=')[0]} from {path} has no password (it is never stored): "
              "pass it again, or set it in the environment", file=sys.stderr)
    return kept


def write_study_outputs(study: optuna.Study, study_cfg: StudyConfig, parent_run: bool = False) -> dict:
    """trials.csv, best.yaml and figures/ under the study folder (and on the active MLflow run)."""
    out = study_cfg.dir
    (out / "figures").mkdir(parents=True, exist_ok=True)
    frame = trials_frame(study)
    write_file(out / "trials.csv", frame.to_csv(index=False))
    figures = {
        "val_loss_curves.png": val_curves_figure(study),
        "optimization_history.png": optuna_figure(ov.plot_optimization_history, study),
        "param_importances.png": optuna_figure(ov.plot_param_importances, study),
        "memory_predicted_vs_measured.png": memory_figure(frame, study_cfg.memory_cap_gb),
    }
    for name, fig in figures.items():
        if fig is not None:
            fig.savefig(out / "figures" / name)
        else:  # an earlier report's figure would describe other trials
            (out / "figures" / name).unlink(missing_ok=True)
    best = best_trial(study, study_cfg.objective)
    if best is not None:
        write_file(out / "best.yaml", best_yaml(study, best))
    if parent_run:
        import mlflow

        mlflow.log_artifact(str(out / "trials.csv"))
        mlflow.log_artifacts(str(out / "figures"), "figures")
        if best is not None:
            mlflow.log_artifact(str(out / "best.yaml"))
            mlflow.log_metrics({"best_value": best.value, "best_trial": best.number})
    return {"trials": frame, "best": best}
