"""``medlora ui``: the MLflow UI on the workspace's store, light, opened on the study's runs.

    check --host/--port -> `mlflow server` (one uvicorn worker, no job runner, no telemetry) in a
    process group of its own -> /health answers -> the study's saved view, through the server ->
    print (and open) the link -> wait for Ctrl-C, SIGTERM or the server's end -> stop the whole group

On Linux the server also gets SIGTERM when this process dies without cleaning up (``kill -9``).
With ``paths.mlflow_server`` set, no server is started: the link points at that server.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from medlora.config import RunConfig, StudyConfig
from medlora.errors import UserError

READY_TIMEOUT_S = 60
# MLflow 3's server starts a job runner (huey: ~8 processes) for GenAI features and reports usage;
# medlora needs neither.
SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}


def checked_port(host: str, port: str) -> int:
    """The port as a number once ``host:port`` is free to listen on; else a UserError naming the problem."""
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise UserError(f"--port {port!r} is not a port number (fix: --port 5000, any of 1-65535)")
    number = int(port)
    try:
        infos = socket.getaddrinfo(host, number, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise UserError(f"--host {host!r} is not an address of this machine (fix: --host 127.0.0.1)") from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: TIME_WAIT is no conflict
        try:
            probe.bind(address)
        except OSError as err:
            busy = err.errno == errno.EADDRINUSE
            raise UserError(f"port {number} on {host} is in use (fix: --port {number + 1}, or stop what uses it)"
                            if busy else f"cannot listen on {host}:{number} ({err.strerror}) "
                            "(fix: --host 127.0.0.1, or an address of this machine)") from None
    return number


def server_command(tracking_uri: str, artifacts: Path, host: str, port: int) -> list[str]:
    return [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", tracking_uri,
            "--registry-store-uri", tracking_uri, "--artifacts-destination", artifacts.as_uri(),
            "--host", host, "--port", str(port), "--workers", "1"]


def _own_group_dying_with_parent() -> None:  # runs in the child between fork and exec
    os.setsid()
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def start(command: list[str], log: Path) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, **SERVER_ENV}, preexec_fn=_own_group_dying_with_parent)


def stop(proc: subprocess.Popen, grace_s: float = 10) -> None:
    """SIGTERM to the server's whole process group; SIGKILL to what is left of it after ``grace_s``."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if proc.poll() is not None and not _group_alive(proc.pid):  # the wrapper reaped, its uvicorn gone
            return
        time.sleep(0.05)
    if _group_alive(proc.pid):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def wait_ready(proc: subprocess.Popen, base_url: str, log: Path) -> float:
    """Seconds until ``/health`` answers; a UserError with the server's last words if it exits first."""
    tic = time.perf_counter()
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through an HTTP proxy
    while time.perf_counter() - tic < READY_TIMEOUT_S:
        if proc.poll() is not None:
            last = [line for line in log.read_text(errors="replace").splitlines() if line.strip()][-1:] or ["-"]
            raise UserError(f"the MLflow server exited (code {proc.returncode}): {last[0][-300:]} (fix: see {log})")
        try:
            with direct.open(f"{base_url}/health", timeout=1) as answer:
                if answer.status == 200:
                    return time.perf_counter() - tic
        except OSError:
            time.sleep(0.1)
    raise UserError(f"the MLflow server did not answer within {READY_TIMEOUT_S} s (fix: see {log})")


def without_password(url: str) -> str:
    """``http://user:secret@host:5000`` -> ``http://host:5000``: a link is printed and shared, a password never."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = (f"[{host}]" if ":" in host else host) + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc)) if parts.password or parts.username else url


def study_link(client, study_cfg: StudyConfig, base_url: str, local: bool = True) -> tuple[str, str]:
    """(the link to the study's runs with its saved view, a line saying what it shows).

    On the workspace's own store (``local``) the empty "Default" experiment is hidden too."""
    from medlora import tracking
    from medlora.study import overview

    experiment = client.get_experiment_by_name(study_cfg.name)
    if experiment is not None and local:
        tracking.hide_empty_default_experiment(client)
    if experiment is None:
        return (f"{base_url}/#/experiments?workflowType=machine_learning",
                f"no study {study_cfg.name!r} in this store yet (`medlora sweep study.name={study_cfg.name}`): "
                "the link opens the experiment list")
    if overview.VIEW_TAG not in experiment.tags:  # a study swept before medlora saved views
        overview.set_view(client, experiment.experiment_id, [s.key for s in study_cfg.search_space])
    return (overview.runs_link(base_url, experiment.experiment_id),
            f"study {study_cfg.name}: its trials, best first, with outcome, role, losses, searched params, memory")


def serve(cfg: RunConfig, study_cfg: StudyConfig, host: str, port: str, open_browser: bool) -> None:
    """Run the UI until Ctrl-C / SIGTERM; every process it started is stopped on the way out.

    The server starts first and creates (or migrates) the store; this process imports MLflow meanwhile
    and then reads and tags the study through the server's REST API, never the database beside it.
    """
    tic = time.perf_counter()
    signal.signal(signal.SIGHUP, _interrupt)  # a closed terminal stops it as Ctrl-C does
    number = checked_port(host, port) if cfg.paths.local_store else 0
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else f"[{host}]" if ":" in host else host
    base_url = cfg.paths.mlflow_server.rstrip("/") if number == 0 else f"http://{shown}:{number}"
    proc = log = None
    if number:
        log = cfg.paths.mlruns / "ui-server.log"
        proc = start(server_command(cfg.paths.tracking_uri, cfg.paths.mlruns / "artifacts", host, number), log)
    try:
        from mlflow.tracking import MlflowClient  # while the server starts

        if proc is not None:
            wait_ready(proc, base_url, log)
            print(f"medlora: MLflow UI ready in {time.perf_counter() - tic:.1f} s (store {cfg.paths.mlruns}, "
                  f"server log {log})")
        client = MlflowClient(tracking_uri=base_url, registry_uri=base_url)
        shown_url = without_password(base_url)
        link, what = study_link(client, study_cfg, shown_url, local=proc is not None)
        print(f"medlora: {what}:\n  {link}\nmedlora: model registry: {shown_url}/#/models?workflowType=machine_learning")
        if open_browser:
            import webbrowser

            webbrowser.open(link)
        if proc is not None:
            print("medlora: Ctrl-C stops it", flush=True)
            code = proc.wait()
            raise UserError(f"the MLflow server stopped by itself (code {code}) (fix: see {log})")
    except KeyboardInterrupt:
        print("\nmedlora: MLflow UI stopped", file=sys.stderr)
    finally:
        if proc is not None:
            stop(proc)
