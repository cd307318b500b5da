"""Named kill points for crash tests.

``MEDLORA_KILL_AT=<point>`` (or ``<point>:<n>``, the n-th time) makes the process
SIGKILL itself when it reaches that point, exactly as a power cut or the OOM
killer would: no cleanup, no finally blocks. Tests use it to prove that a study survives a crash anywhere. Unset (as
always outside tests) it costs one dictionary lookup.

Points: prepare (split files written, not yet renamed into place), convert (model
folder built, not yet renamed), train (after a training report), evaluate (after
a validation report), log_artifacts (adapters about to be logged).
"""

from __future__ import annotations

import os
import signal
from collections import Counter

POINTS = ("prepare", "convert", "train", "evaluate", "log_artifacts")
_reached: Counter = Counter()


def kill_point(name: str) -> None:
    target = os.environ.get("MEDLORA_KILL_AT")
    if not target or not target.startswith(name):
        return
    point, _, nth = target.partition(":")
    if point == name:
        _reached[name] += 1
        if _reached[name] == int(nth or 1):
            os.kill(os.getpid(), signal.SIGKILL)
