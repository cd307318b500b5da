"""What the MLflow UI shows of a study: its saved runs view, the trials' roles, the parent run's description.

MLflow reads all three from the store, so any MLflow UI (``medlora ui`` or a shared ``mlflow server``) shows them:

- the saved view ``medlora`` (experiment tag ``mlflow.sharedViewState.medlora``, listed under "Views"): the
  runs flat, best validation loss first, with the outcome, role and registry tags, the losses, the searched
  params, predicted and measured memory and speed as columns;
- run tags ``outcome`` (complete / pruned / over cap / infeasible / failed / interrupted), ``role`` (study /
  trial / best trial) and ``registry`` (champion vN, previous vN: set by ``medlora promote``);
- the parent run's description (``mlflow.note.content``): counts by outcome, the cap, the best trial and the
  champion, with links, and a table of every trial.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from urllib.parse import quote

from mlflow.tracking import MlflowClient

from medlora import tracking

VIEW_KEY = "medlora"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"
OUTCOMES = ("complete", "pruned", "over cap", "infeasible", "failed", "interrupted", "running")
METRIC_COLUMNS = ("best_val_loss", "val_loss")
SPEED_COLUMNS = ("peak_memory_gb", "median_tokens_per_second", "run_seconds")


def parent_run_name(study: str) -> str:
    return f"{study}/study"


def runs_view(searched: list[str]) -> dict:
    """The runs table state MLflow's UI reads from a saved view: columns, order, flat (no nesting)."""
    column = "{}.`{}`".format
    columns = [*(column("tags", t) for t in ("outcome", "role", "registry")),
               *(column("metrics", m) for m in METRIC_COLUMNS), *(column("params", p) for p in searched),
               column("params", "predicted_peak_gb"), *(column("metrics", m) for m in SPEED_COLUMNS)]
    return {"selectedColumns": columns, "orderByKey": column("metrics", "best_val_loss"), "orderByAsc": True,
            "searchFilter": "", "columnOrder": ["duration", *columns],
            "columnWidths": {c: 180 if "registry" in c else 120 if c.startswith("params") else 100 for c in columns}}


def set_view(client: MlflowClient, experiment_id: str, searched: list[str]) -> None:
    """Save the view on the experiment (and mark it a model-training experiment, not a GenAI one)."""
    now = int(time.time() * 1000)
    envelope = {"name": "medlora: trials", "createdAt": now, "updatedAt": now,
                "state": json.dumps(runs_view(searched))}
    for key, value in tracking.fields({VIEW_TAG: json.dumps(envelope),
                                       "mlflow.experimentKind": "custom_model_development"}, 5000).items():
        client.set_experiment_tag(experiment_id, key, value)


def runs_link(base_url: str, experiment_id: str, view: bool = True) -> str:
    """The study's runs in the model-training view (``workflowType``), with the saved view when there is one."""
    query = "workflowType=machine_learning" + (f"&viewStateShareKey={VIEW_KEY}" if view else "")
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs?{query}"


def outcome_of(run) -> str:
    """The ``outcome`` tag; for runs recorded before it existed, read from the status."""
    tags = run.data.tags
    if "outcome" in tags:
        return tags["outcome"]
    if tags.get("trial_state") == "INFEASIBLE":
        return "infeasible"
    return {"FINISHED": "complete", "KILLED": "pruned", "FAILED": "failed"}.get(run.info.status, "running")


def trial_runs(client: MlflowClient, parent_run_id: str) -> tuple[object, list]:
    """(the parent run, its child runs sorted by trial number)."""
    parent = client.get_run(parent_run_id)
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'")
    return parent, sorted(children, key=lambda r: int(r.data.tags.get("trial_number", 10**6)))


def mark_best(client: MlflowClient, parent_run_id: str, best_run_id: str | None) -> None:
    """Tag ``role``: "best trial" on ``best_run_id``, "trial" on the study's other trials."""
    for run in trial_runs(client, parent_run_id)[1]:
        role = "best trial" if run.info.run_id == best_run_id else "trial"
        if run.data.tags.get("role") != role:
            tracking.record(tags={"role": role}, run_id=run.info.run_id)


def describe(client: MlflowClient, parent_run_id: str, searched: list[str] | None = None) -> str:
    """Write the parent run's markdown description from its trials' runs; return it.

    The UI shows its first lines and folds the rest ("Show more"): best trial and registry come first.
    """
    parent, runs = trial_runs(client, parent_run_id)
    exp = parent.info.experiment_id
    searched = searched or json.loads(parent.data.params.get("searched", "[]"))
    counts = Counter(outcome_of(r) for r in runs)
    lines = []
    for run in (r for r in runs if r.data.tags.get("role") == "best trial"):
        loss = run.data.metrics.get("best_val_loss", float("nan"))
        lines += [f"**Best trial:** {_run_link(run, exp)}, best validation loss {loss:.4f} ("
                  + ", ".join(f"{k}={_short(run.data.params.get(k))}" for k in searched) + ")", ""]
    for run in (r for r in runs if "registry" in r.data.tags):
        model = run.data.tags.get("registered_model", "")
        versions = ", ".join(f"[{mark}](#/models/{quote(model)}/versions/{mark.rsplit(' v', 1)[-1]})"
                             for mark in run.data.tags["registry"].split(", "))
        lines += [f"**Registry** (`{model}`): {versions}: {_run_link(run, exp)}", ""]
    lines += [f"**{len(runs)} trials**: " + ", ".join(f"{counts[o]} {o}" for o in OUTCOMES if counts[o])
              + f" · memory cap {parent.data.params.get('memory_cap_gb', '?')} GB · searched: "
              + ", ".join(f"`{k}`" for k in searched), "",
              "| trial | outcome | role | best val loss | " + " | ".join(searched) + " |",
              "|---" * (4 + len(searched)) + "|"]
    for shown, run in enumerate(runs):
        loss = run.data.metrics.get("best_val_loss")
        row = (f"| {_run_link(run, exp)} | {outcome_of(run)} | "
               f"{run.data.tags.get('role', '')} {run.data.tags.get('registry', '')} | "
               f"{'-' if loss is None else f'{loss:.4f}'} | "
               + " | ".join(_short(run.data.params.get(k, "-")) for k in searched) + " |")
        if sum(len(line) + 1 for line in lines) + len(row) > 7800:  # MLflow keeps 8000 characters of a tag
            lines.append(f"\n{len(runs) - shown} more trials: see the runs table")
            break
        lines.append(row)
    text = "\n".join(lines)
    tracking.record(tags={"mlflow.note.content": text}, run_id=parent_run_id)
    return text


def _run_link(run, experiment_id: str) -> str:
    return f"[{run.info.run_name}](#/experiments/{experiment_id}/runs/{run.info.run_id})"


def _short(value: str | None) -> str:
    """A param as a person reads it: 0.0063805560920 -> 0.00638."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return str(value) if number.is_integer() else f"{number:.3g}"
