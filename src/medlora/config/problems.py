"""Turn pydantic's validation errors into medlora's one-line clauses: key, value, what is wrong, the fix."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

import medlora.config.secrets as secrets

KEY_FIX = "check the key against `medlora <command> --cfg`, use key=value, and +key=value only to add a new key"


def describe(err: ValidationError, prefix: str, default_of: Callable[[str], Any],
             space_keys: list[str] | None = None) -> list[str]:
    """One clause per pydantic error: the key, the value given, what is wrong, and the fix."""
    out = []
    for e in err.errors():
        loc = [str(p) for p in e["loc"]]
        if space_keys and loc[:1] == ["search_space"] and len(loc) > 1 and loc[1].isdigit():
            loc = ["search_space", space_keys[int(loc[1])], *loc[2:]]
        key = ".".join([prefix, *loc] if prefix else loc)
        if e["type"] == "value_error":  # a cross-field check: its message names keys and fix itself
            out.append(e["msg"].removeprefix("Value error, "))
        elif e["type"] == "extra_forbidden":
            out.append(f"{key} is not a config key (fix: {KEY_FIX})")
        elif e["type"] == "missing":
            out.append(f"{key} is missing (fix: +{key}=<value>, see the packaged default with --cfg)")
        else:
            message = e["msg"][:1].lower() + e["msg"][1:]
            out.append(f"{key}={_shown(e['input'])}: {message} (fix: {_fix(e, key, default_of)})")
    return out


def _fix(error: dict, key: str, default_of: Callable[[str], Any]) -> str:
    if error["type"] == "literal_error":
        return f"{key}={error['ctx']['expected'].replace(chr(39), '')}"
    if error["type"].startswith("bool"):
        return f"{key}=true or {key}=false"
    if error["type"] == "string_pattern_mismatch":
        return f"{key}=<a plain name: letters, digits, -, _ and .>"
    default = default_of(key)
    if isinstance(default, (bool, int, float, str)):
        return f"e.g. {key}={default}, the default"
    return f"see `medlora <command> --cfg` for {key}"


def _shown(value: Any) -> str:
    text = secrets.mask(str(value))
    return text if len(text) <= 60 else text[:57] + "..."
