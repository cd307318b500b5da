"""MLflow setup and run bookkeeping.

The store is ``sqlite:///<paths.mlruns>/mlflow.db`` (MLflow >= 3.13 refuses a
plain ``./mlruns`` file store) with artifacts under ``<paths.mlruns>/artifacts/``,
or, for workers on several machines, the ``mlflow server`` at ``paths.mlflow_server``.
Runs are always closed: FINISHED on success, FAILED (with an ``error`` tag) when
anything raises, KILLED on Ctrl-C.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import RunStatus

from medlora.config import Paths

# MLflow's alembic migrations and its "experiment created" chatter are noise on a CLI.
for _name in ("alembic", "mlflow.store.db.utils", "mlflow.tracking.fluent"):
    logging.getLogger(_name).setLevel(logging.WARNING)
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
# log_table re-downloads the table it appends to: one "Downloading artifacts" bar per evaluation otherwise.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def connect(paths: Paths) -> None:
    """Point MLflow (tracking and registry) at the project's store, creating it if needed."""
    if paths.local_store:
        paths.mlruns.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(paths.tracking_uri)
    mlflow.set_registry_uri(paths.tracking_uri)


def require_store(paths: Paths, fix: str) -> None:
    """Raise a UserError (creating nothing) when the MLflow store does not exist yet."""
    from medlora.errors import UserError

    if paths.local_store and not (paths.mlruns / "mlflow.db").exists():
        raise UserError(f"no MLflow store at {paths.mlruns / 'mlflow.db'}: no champion yet {fix}")


@contextmanager
def registry_lock(paths: Paths) -> Iterator[None]:
    """Serialise registry updates (promote, rollback) between processes on this machine.

    Moving two aliases is two writes; without the lock two promotes at once could both read
    the same champion and both name it 'previous'. A shared `mlflow server` has no such lock:
    promote from one machine.
    """
    if not paths.local_store:
        yield
        return
    import fcntl

    paths.mlruns.mkdir(parents=True, exist_ok=True)
    with open(paths.mlruns / ".registry.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def experiment_id(paths: Paths, name: str) -> str:
    """The id of experiment ``name``, created with its artifacts under ``<paths.mlruns>/artifacts``."""
    connect(paths)
    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    # a local store keeps artifacts under mlruns/; a server decides for itself (--artifacts-destination)
    location = (paths.mlruns.resolve() / "artifacts" / name).as_uri() if paths.local_store else None
    try:
        return mlflow.create_experiment(name, artifact_location=location)
    except mlflow.exceptions.MlflowException:  # created meanwhile by another worker
        return mlflow.get_experiment_by_name(name).experiment_id


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": "1"}``; lists become their string form."""
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)[:6000]
    return flat


@contextmanager
def tracked_run(
    paths: Paths,
    experiment_name: str,
    run_name: str | None = None,
    *,
    nested: bool = False,
    tags: Mapping[str, str] | None = None,
    run_id: str | None = None,
    stop_exceptions: tuple[type[BaseException], ...] = (),
) -> Iterator[mlflow.ActiveRun]:
    """Start (or, with ``run_id``, resume) an MLflow run that always ends with a final status.

    An exception in ``stop_exceptions`` (a pruned trial, a memory cap) ends the run
    KILLED with the reason as the ``stopped`` tag; any other ends it FAILED with the
    ``error`` tag. Either way the exception propagates.
    """
    exp_id = experiment_id(paths, experiment_name)
    run = mlflow.start_run(run_id=run_id, experiment_id=exp_id, run_name=run_name, nested=nested,
                           tags=dict(tags or {}))
    status = RunStatus.to_string(RunStatus.FINISHED)
    try:
        yield run
    except stop_exceptions as stop:
        status = RunStatus.to_string(RunStatus.KILLED)
        mlflow.set_tag("stopped", f"{type(stop).__name__}: {stop}"[:5000])
        raise
    except KeyboardInterrupt:
        status = RunStatus.to_string(RunStatus.KILLED)
        mlflow.set_tag("error", "interrupted (Ctrl-C / SIGTERM)")
        raise
    except BaseException as err:
        status = RunStatus.to_string(RunStatus.FAILED)
        mlflow.set_tag("error", f"{type(err).__name__}: {err}"[:5000])
        raise
    finally:
        mlflow.end_run(status=status)


def log_config(raw: Mapping[str, Any], yaml_text: str) -> None:
    """Log the flattened resolved config as params and the composed YAML as an artifact."""
    mlflow.log_params(flatten(raw))
    mlflow.log_text(yaml_text, "config.yaml")


def log_dir(local_dir: Path, artifact_path: str) -> None:
    mlflow.log_artifacts(str(local_dir), artifact_path)
