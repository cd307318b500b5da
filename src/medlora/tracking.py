"""MLflow setup and run bookkeeping.

The store is ``sqlite:///<paths.mlruns>/mlflow.db`` (MLflow >= 3.13 refuses a
plain ``./mlruns`` file store) with artifacts under ``<paths.mlruns>/artifacts/``,
or, for workers on several machines, the ``mlflow server`` at ``paths.mlflow_server``.
Runs are always closed: FINISHED on success, FAILED (with an ``error`` tag) when
anything raises, KILLED on Ctrl-C or a stop (pruned, over the memory cap), with an ``outcome``
tag saying which. Every param and tag medlora writes passes through :func:`fields`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Param, RunStatus, RunTag

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
# medlora works offline: no usage reports from the client (nor from `medlora ui`'s server, which inherits it).
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


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
            client.set_tag(run.info.run_id, "outcome", "failed")
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
        created = mlflow.create_experiment(name, artifact_location=location)
    except mlflow.exceptions.MlflowException:  # created meanwhile by another worker
        return mlflow.get_experiment_by_name(name).experiment_id
    if paths.local_store:
        hide_empty_default_experiment()
    return created


def hide_empty_default_experiment(client=None) -> None:
    """Delete (MLflow keeps it, marked deleted) the store's "Default" experiment when no run uses it.

    MLflow creates it with every store, its artifacts in whatever folder the process started in;
    medlora files every run under a named experiment, so in the UI it is an empty entry.
    """
    from mlflow.tracking import MlflowClient

    client = client or MlflowClient()
    default = client.get_experiment("0")
    if default is not None and default.lifecycle_stage == "active" and not client.search_runs(["0"], max_results=1):
        client.delete_experiment("0")


def fields(values: Mapping[str, Any] | None, limit: int = 6000) -> dict[str, str]:
    """Params and tags as MLflow stores them: strings, cut to ``limit``. Every param and tag medlora
    writes (runs, experiments, registry versions) passes through here."""
    return {str(key): mask(str(value))[:limit] for key, value in (values or {}).items()}


def record(*, params: Mapping[str, Any] | None = None, tags: Mapping[str, Any] | None = None,
           run_id: str | None = None) -> None:
    """Log params and set tags on run ``run_id``, or on the active run."""
    params, tags = fields(params), fields(tags, 8000)
    if run_id is None:
        if params:
            mlflow.log_params(params)
        if tags:
            mlflow.set_tags(tags)
        return
    from mlflow.tracking import MlflowClient

    MlflowClient().log_batch(run_id, params=[Param(k, v) for k, v in params.items()],
                             tags=[RunTag(k, v) for k, v in tags.items()])


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
    stop_exceptions: Mapping[type[BaseException], str] | None = None,
) -> Iterator[mlflow.ActiveRun]:
    """Start (or, with ``run_id``, resume) an MLflow run that always ends with a final status.

    ``stop_exceptions`` maps the exceptions that stop a run on purpose (a pruned trial, a memory
    cap) to their outcome: such a run ends KILLED, with the reason as the ``stopped`` tag. Ctrl-C
    ends it KILLED ("interrupted"), any other exception FAILED with the ``error`` tag. The
    ``outcome`` tag says which (``complete`` when nothing raised); the exception propagates.
    """
    exp_id = experiment_id(paths, experiment_name)
    run = mlflow.start_run(run_id=run_id, experiment_id=exp_id, run_name=run_name, nested=nested,
                           tags=fields({**(tags or {}), OWNER_TAG: liveness.me()}, 8000))
    stops = dict(stop_exceptions or {})
    status, outcome, why = RunStatus.FINISHED, "complete", {}
    try:
        yield run
    except tuple(stops) as stop:
        status, outcome = RunStatus.KILLED, next(name for kind, name in stops.items() if isinstance(stop, kind))
        why = {"stopped": f"{type(stop).__name__}: {stop}"}
        raise
    except KeyboardInterrupt:
        status, outcome, why = RunStatus.KILLED, "interrupted", {"error": "interrupted (Ctrl-C / SIGTERM)"}
        raise
    except BaseException as err:
        status, outcome, why = RunStatus.FAILED, "failed", {"error": f"{type(err).__name__}: {err}"}
        raise
    finally:
        record(tags={**why, "outcome": outcome})
        mlflow.end_run(status=RunStatus.to_string(status))


def log_config(raw: Mapping[str, Any], yaml_text: str, keys: Iterable[str]) -> None:
    """Log ``keys`` of the resolved config as params (what a person compares across runs) and the
    whole composed YAML as the artifact ``config.yaml``."""
    flat = flatten(raw)
    record(params={key: flat[key] for key in keys if key in flat})
    mlflow.log_text(yaml_text, "config.yaml")


def log_dir(local_dir: Path, artifact_path: str) -> None:
    mlflow.log_artifacts(str(local_dir), artifact_path)
