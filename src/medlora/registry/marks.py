"""The registry's aliases shown where people look at runs.

Each registered run gets the tag ``registry`` ("champion v2", "champion v2, previous v1", ...) and
``registered_model``; a run that no longer holds an alias loses the tag. The description of the
study each changed run belongs to is rewritten, so its "Registry" line links the champion.
"""

from __future__ import annotations

from collections import defaultdict

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from medlora import tracking
from medlora.study import overview


def mark_aliases(client: MlflowClient, name: str) -> None:
    """Set (or clear) the ``registry`` tag on every run registered under ``name``."""
    marks: dict[str, list[str]] = defaultdict(list)
    versions = {str(v.version): v.run_id for v in client.search_model_versions(f"name='{name}'") if v.run_id}
    for alias, version in client.get_registered_model(name).aliases.items():
        if str(version) in versions:
            marks[versions[str(version)]].append(f"{alias} v{version}")
    studies = set()
    for run_id in set(versions.values()):
        try:
            run = client.get_run(run_id)
        except MlflowException:  # the run was deleted; its version stays
            continue
        text = ", ".join(sorted(marks[run_id]))
        if run.data.tags.get("registry", "") == text:
            continue
        if text:
            tracking.record(tags={"registry": text, "registered_model": name}, run_id=run_id)
        else:
            client.delete_tag(run_id, "registry")
        if "mlflow.parentRunId" in run.data.tags:
            studies.add(run.data.tags["mlflow.parentRunId"])
    for parent_run_id in studies:
        overview.describe(client, parent_run_id)
