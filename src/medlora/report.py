"""Matplotlib figures and tables (Agg backend: no display needed)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def loss_curve_figure(history, title: str = ""):
    """Train and validation loss against iteration, one figure."""
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    if history.train:
        ax.plot(*zip(*history.train), label="train loss", color="tab:blue", alpha=0.8)
    if history.val:
        ax.plot(*zip(*history.val), "o-", label="validation loss", color="tab:orange")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss (nats / answer token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    plt.close(fig)
    return fig


# ---------------------------------------------------------------- study outputs

TRIAL_COLUMNS = ["number", "state", "value", "baseline", "predicted_peak_gb", "measured_peak_gb", "peak_rss_gb",
                 "trained_tokens", "seconds", "reason", "run_id"]


def trial_state(trial) -> str:
    """COMPLETE / PRUNED / INFEASIBLE / OVER_CAP / FAILED / RUNNING, as medlora names them."""
    from optuna.trial import TrialState

    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return trial.user_attrs.get("state", trial.state.name)
    return trial.state.name


def trials_frame(study):
    """One row per trial: params, state, value, predicted and measured peak memory, tokens, seconds."""
    import pandas as pd

    rows, param_names = [], set()
    for t in study.get_trials(deepcopy=False):
        row = {"number": t.number, "state": trial_state(t), "value": t.value,
               "baseline": bool(t.user_attrs.get("baseline", False))}
        row.update({k: t.user_attrs.get(k) for k in TRIAL_COLUMNS[4:]})
        if row["seconds"] is None and t.datetime_start and t.datetime_complete:
            row["seconds"] = round((t.datetime_complete - t.datetime_start).total_seconds(), 1)
        row.update(t.params)
        param_names.update(t.params)
        rows.append(row)
    return pd.DataFrame(rows, columns=TRIAL_COLUMNS + sorted(param_names))


def best_trial(study):
    """The best COMPLETE trial within the memory cap, or None."""
    feasible = [t for t in study.get_trials(deepcopy=False)
                if trial_state(t) == "COMPLETE" and all(v <= 0 for v in t.constraints.values())]
    return min(feasible, key=lambda t: t.value, default=None)


def val_curves_figure(study):
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    palette = plt.get_cmap("tab10")
    for t in study.get_trials(deepcopy=False):
        if t.intermediate_values:
            steps = sorted(t.intermediate_values)
            state = trial_state(t)
            style = {"COMPLETE": dict(ls="-", alpha=0.9), "PRUNED": dict(ls=":", alpha=0.6),
                     "OVER_CAP": dict(ls="--", alpha=0.6, color="tab:red")}.get(state, dict(ls="-.", alpha=0.5))
            ax.plot(steps, [t.intermediate_values[s] for s in steps], marker="o", ms=3,
                    **{"color": palette(t.number % 10), **style}, label=f"#{t.number} {state.lower()}")
    ax.set_xlabel("iteration")
    ax.set_ylabel("validation loss")
    values = [v for t in study.get_trials(deepcopy=False) for v in t.intermediate_values.values()]
    if values:  # a diverged trial must not flatten everyone else's curve
        ax.set_ylim(min(values) * 0.97, min(max(values), sorted(values)[len(values) // 2] * 1.6))
    ax.set_title("Validation loss of every trial (iteration 0 = the base model)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    plt.close(fig)
    return fig


def memory_figure(frame, cap_gb: float):
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


def optuna_figure(plot_fn, study):
    """An ``optuna.visualization.matplotlib`` plot as a Figure (None when it has too few trials)."""
    import warnings

    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            ax = plot_fn(study)
        except (ValueError, RuntimeError):
            return None
    fig = ax.figure
    fig.set_size_inches(7, 4.5)
    fig.tight_layout()
    plt.close(fig)
    return fig


def best_yaml(study, trial) -> str:
    """A file `medlora train --from FILE` reads: the overrides that reproduce ``trial``."""
    import yaml

    overrides = [o for o in trial.user_attrs.get("overrides", [])]
    header = (f"# Best trial #{trial.number} of study {study.study_name}: best validation loss {trial.value:.4f}\n"
              f"# Reproduce it with:  medlora train --from <this file>\n")
    return header + yaml.safe_dump({"overrides": overrides, "trial": trial.number, "value": float(trial.value),
                                    "params": dict(trial.params)}, sort_keys=False)


def write_study_outputs(study, study_cfg, parent_run: bool = False) -> dict:
    """trials.csv, best.yaml and figures/ under the study folder (and on the active MLflow run)."""
    import optuna.visualization.matplotlib as ov

    out = study_cfg.dir
    (out / "figures").mkdir(parents=True, exist_ok=True)
    frame = trials_frame(study)
    frame.to_csv(out / "trials.csv", index=False)
    figures = {
        "val_loss_curves.png": val_curves_figure(study),
        "optimization_history.png": optuna_figure(ov.plot_optimization_history, study),
        "param_importances.png": optuna_figure(ov.plot_param_importances, study),
        "memory_predicted_vs_measured.png": memory_figure(frame, study_cfg.memory_cap_gb),
    }
    for name, fig in figures.items():
        if fig is not None:
            fig.savefig(out / "figures" / name)
    best = best_trial(study)
    if best is not None:
        (out / "best.yaml").write_text(best_yaml(study, best))
    if parent_run:
        import mlflow

        mlflow.log_artifact(str(out / "trials.csv"))
        mlflow.log_artifacts(str(out / "figures"), "figures")
        if best is not None:
            mlflow.log_artifact(str(out / "best.yaml"))
            mlflow.log_metrics({"best_value": best.value, "best_trial": best.number})
    return {"trials": frame, "best": best}


# ---------------------------------------------------------------- evaluation outputs


def evaluation_figure(table: list[dict], title: str = ""):
    """One panel per metric, one bar per row (base, adapter, retrieval, rag)."""
    panels = [("rougeL", "ROUGE-L F1 (higher is better)"), ("similarity", "MiniLM cosine similarity (higher)"),
              ("repetition_rate", "answers repeating a 4-gram (lower)"), ("test_loss", "test loss, nats (lower)")]
    fig, axes = plt.subplots(1, len(panels), figsize=(13, 3.6), dpi=110)
    names = [t["row"] for t in table]
    colors = [f"C{i}" for i in range(len(table))]
    for ax, (key, label) in zip(axes, panels):
        values = [t[key] for t in table]
        bars = ax.bar(names, [v if v == v else 0.0 for v in values], color=colors)
        for bar, value in zip(bars, values):
            ax.annotate("n/a" if value != value else f"{value:.3f}", (bar.get_x() + bar.get_width() / 2,
                        bar.get_height()), ha="center", va="bottom", fontsize=8)
        ax.set_title(label, fontsize=9)
        ax.tick_params(axis="x", labelsize=8, rotation=20)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    plt.close(fig)
    return fig


def write_atomically(folder, texts: dict[str, str], figures: dict | None = None):
    """Write ``texts`` (name -> content) and ``figures`` (name -> matplotlib figure) into a new ``folder``,
    all or nothing: they are written next to it first, then renamed into place."""
    import os
    import tempfile
    from pathlib import Path

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-"))
    for name, text in texts.items():
        (tmp / name).write_text(text)
    for name, fig in (figures or {}).items():
        fig.savefig(tmp / name)
    os.chmod(tmp, 0o755)
    os.replace(tmp, folder)
    return folder
