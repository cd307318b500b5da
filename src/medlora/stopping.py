"""A stop asked for by Ctrl-C or SIGTERM, honoured even when a library swallowed it.

Python delivers a signal by raising in whatever the main thread runs at that
moment; when that is a weakref callback or a ``__del__`` (MLflow and mlx create
plenty), the interpreter prints "Exception ignored" and goes on, and a sweep would
train its trial to the end. So the handler also records the request, and the loops
that take time (every training and validation batch) call :func:`check`, which
raises ``KeyboardInterrupt`` again where it cannot be lost.
"""

from __future__ import annotations

import signal

_requested = False


def _request_stop(signum, frame):
    global _requested
    _requested = True
    raise KeyboardInterrupt


def install() -> None:
    """Ctrl-C and SIGTERM both stop the command as Ctrl-C does (runs end KILLED, a study can resume)."""
    global _requested
    _requested = False
    signal.signal(signal.SIGINT, _request_stop)
    signal.signal(signal.SIGTERM, _request_stop)


def check() -> None:
    """Raise ``KeyboardInterrupt`` if a stop was asked for (once; the caller's handlers then run)."""
    global _requested
    if _requested:
        _requested = False
        raise KeyboardInterrupt
