"""`medlora ui`: bad addresses fail in one line, the server is light, and every process it starts stops with it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import pytest
from uiproc import children, free_port, group_members, start_ui, wait_gone

from medlora.cli import main


@pytest.mark.parametrize("args, message", [
    (["--port", "abc"], "is not a port number"),
    (["--port", "70000"], "is not a port number"),
    (["--host", "no-such-host.invalid"], "is not an address of this machine"),
])
def test_a_bad_address_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, args, message):
    assert main(["ui", *args, f"paths.mlruns={tmp_path / 'mlruns'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "(fix: " in err[0]
    assert not (tmp_path / "mlruns").exists()


def test_a_busy_port_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["ui", "--port", str(port), f"paths.mlruns={tmp_path / 'mlruns'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"port {port} on 127.0.0.1 is in use" in err[0] and f"--port {port + 1}" in err[0]
    assert not (tmp_path / "mlruns").exists()


def test_help_names_host_port_and_open(capsys):
    with pytest.raises(SystemExit):
        main(["ui", "--help"])
    out = capsys.readouterr().out
    assert "--host" in out and "--port" in out and "--open" in out


@pytest.mark.slow  # starts the real server, ~5-10 s each
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("stop_with", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGKILL])
def test_the_server_is_light_and_stops_with_medlora_ui(tmp_path, stop_with):
    """Two processes (the mlflow CLI and one uvicorn worker, no job runner), all gone when medlora ui ends,
    however it ends: kill, Ctrl-C, a closed terminal, or kill -9 (the server then gets SIGTERM from the kernel)."""
    port = free_port()
    proc, lines = start_ui(tmp_path, port)
    try:
        (server,) = children(proc.pid)
        members = group_members(server)
        assert len(members) == 2, members  # `mlflow server` and its single uvicorn worker
        assert any("ready in" in line for line in lines)
        assert any("#/experiments?workflowType=machine_learning" in line for line in lines)  # no study yet
    finally:
        proc.send_signal(stop_with)
        proc.wait(timeout=30)
    assert wait_gone(server) == []
    if stop_with != signal.SIGKILL:
        assert proc.returncode == 0
        assert "KILLED" not in proc.stderr.read()
    with socket.socket() as again:
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", port))  # the port is free again


@pytest.mark.slow
def test_a_second_ui_on_the_same_port_fails_at_once(tmp_path):
    port = free_port()
    proc, _ = start_ui(tmp_path, port)
    try:
        second = subprocess.run([sys.executable, "-m", "medlora.cli", "ui", "--port", str(port),
                                 f"paths.mlruns={tmp_path / 'other'}"], capture_output=True, text=True, timeout=120)
        assert second.returncode == 2
        assert second.stderr.strip().splitlines() == [f"medlora: error: port {port} on 127.0.0.1 is in use "
                                                      f"(fix: --port {port + 1}, or stop what uses it)"]
        assert second.stdout == "" and not (tmp_path / "other").exists()
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
