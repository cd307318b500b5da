"""Passwords in URLs never leave the process: every logged, stored or printed copy is masked.

``postgresql://medlora:s3cret@db/optuna`` becomes ``postgresql://medlora:***@db/optuna``. The real
URL only ever comes from the command line or the environment (``MEDLORA_STUDY_STORAGE``,
``MEDLORA_MLFLOW_SERVER``), so a resumed study reconnects without anything having stored it.
"""

from __future__ import annotations

import re
from typing import Any

# scheme://user:password@  (the password is anything up to the last @ before the host)
_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^/\s:@]*:)(?P<password>[^\s@/]*(?:@[^\s@/]*)*)(?=@)")
MASK = "***"


def mask(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***``."""
    return _PASSWORD.sub(lambda m: m.group("head") + MASK, text)


def masked(value: Any) -> Any:
    """A copy of a config tree (dicts, lists, strings) with every URL password masked."""
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, dict):
        return {k: masked(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(masked(v) for v in value)
    return value
