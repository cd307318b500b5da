"""Is the process that left this behind still alive? Host + pid + start time, checked on this host.

A study trial, an MLflow run and a temporary folder each record who is working on them
(:func:`me`). A later process on the same host can then tell at once, with no heartbeat and no
grace period, that the owner is dead: its pid is gone, or reused by a process that started at
another time. On another host nothing can be checked (:func:`is_dead` says False) and the
study's heartbeat decides. This module imports nothing of medlora's.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path


def _start_ticks(pid: int) -> str | None:
    """The process's start time since boot in clock ticks (Linux /proc), or None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22; the command name before ")" may hold spaces


def me() -> str:
    """``host:pid:start`` of this process."""
    return f"{socket.gethostname()}:{os.getpid()}:{_start_ticks(os.getpid()) or '?'}"


def is_local(owner: str | None) -> bool:
    """True when ``owner`` (a :func:`me` string) names a process of this host."""
    return bool(owner) and owner.count(":") >= 2 and owner.rsplit(":", 2)[0] == socket.gethostname()


def is_dead(owner: str | None) -> bool:
    """True when ``owner`` (a :func:`me` string) names a process of this host that no longer runs."""
    if not is_local(owner):
        return False
    _, pid_text, start = owner.rsplit(":", 2)
    if not pid_text.isdigit():
        return False
    pid = int(pid_text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, someone else's
    now = _start_ticks(pid)
    return start != "?" and now is not None and now != start  # the pid was reused by another process
