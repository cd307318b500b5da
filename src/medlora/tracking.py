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

from medlora import liveness
from medlora.config import Paths
from medlora.config.secrets import mask

# MLflow's alembic migrations and its "experiment created" chatter are noise on a CLI.
for _name in ("alembic", "mlflow.store.db.utils", "mlflow.tracking.fluent"):
    logging.getLogger(_name).setLevel(logging.WARNING)
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
# log_table re-downloads the table it appends to: one "Downloading artifacts" bar per evaluation otherwise.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
# a tracking server that does not answer: MLflow's default retries wait minutes before giving up
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")
SERVER_TIMEOUT_SECONDS = 10


def connect(paths: Paths) -> None:
    """Point MLflow (tracking and registry) at the project's store, creating it if needed; the first
    time in a process, close the runs that processes of this host left RUNNING when they died."""
    if paths.local_store:
        paths.mlruns.mkdir(parents=True, exist_ok=True)
    elif paths.tracking_uri not in _swept:
        _check_server(paths.tracking_uri)
    mlflow.set_tracking_uri(paths.tracking_uri)
    mlflow.set_registry_uri(paths.tracking_uri)
    if paths.tracking_uri not in _swept:
        _swept.add(paths.tracking_uri)
        close_dead_runs()


_swept: set[str] = set()


def _check_server(url: str) -> None:
    """UserError within seconds, naming the (masked) URL, when the tracking server does not answer."""
    import requests

    from medlora.errors import UserError

    try:
        requests.get(url.rstrip("/") + "/health", timeout=SERVER_TIMEOUT_SECONDS).raise_for_status()
    except requests.RequestException as err:
        raise UserError(f"the MLflow server {mask(url)} does not answer ({type(err).__name__}) (fix: start it "
                        "(mlflow server ...), check paths.mlflow_server, or set it to null for the local store)") from None
OWNER_TAG = "medlora.owner"  # liveness.me() of the process running the run


def close_dead_runs() -> list[str]:
    """Runs left RUNNING by a process of this host that died (kill -9, power cut): FAILED, with the reason."""
    from mlflow.tracking import MlflowClient

    client, closed = MlflowClient(), []
    for run in mlflow.search_runs(search_all_experiments=True, filter_string="attributes.status = 'RUNNING'",
                                  output_format="list"):
        owner = run.data.tags.get(OWNER_TAG)
        if liveness.is_dead(owner):
            client.set_tag(run.info.run_id, "error", f"the process running this ({owner}) died; "
                                                     "closed by the next medlora command")
            client.set_terminated(run.info.run_id, status="FAILED")
            closed.append(run.info.run_id)
    return closed


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
                           tags={**(tags or {}), OWNER_TAG: liveness.me()})
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
