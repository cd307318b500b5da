"""Helpers for tests of `medlora ui`: a free port, the processes of a group (Linux /proc), `medlora ui` started."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def group_members(pgid: int) -> list[int]:
    """Pids of the live processes in process group ``pgid`` (Linux /proc)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(stat.parent.name))
    return members


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, ValueError):
            continue
    return found


def start_ui(workdir: Path, port: int, *extra: str) -> tuple[subprocess.Popen, list[str]]:
    """`medlora ui` as a user runs it; returns once it printed the study's link (or failed)."""
    proc = subprocess.Popen([sys.executable, "-m", "medlora.cli", "ui", "--port", str(port),
                             f"paths.mlruns={workdir / 'mlruns'}", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=workdir)
    lines = []
    for line in proc.stdout:
        lines.append(line.rstrip())
        if "Ctrl-C stops it" in line:
            return proc, lines
    raise AssertionError(f"medlora ui ended early: {lines} {proc.stderr.read()[-2000:]}")


def wait_gone(pgid: int, timeout: float = 20) -> list[int]:
    deadline = time.monotonic() + timeout
    while group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.2)
    return group_members(pgid)
