"""Command-line flags that are shorthands for config overrides (``medlora serve --port 8001``).

A flag becomes an override (``serve.port=8001``) and is checked like any other, so a bad value gets
the same one-line error with its fix.
"""

from __future__ import annotations

from typing import Any

# command -> (flag, config key, metavar, help)
SHORTHANDS = {
    "serve": [("--version", "serve.adapter", "N", "a registry version number instead of the champion"),
              ("--run", "serve.adapter", "RUN_ID", "an MLflow run id: that run's best adapter"),
              ("--host", "serve.host", "HOST", "address to listen on (0.0.0.0: every interface)"),
              ("--port", "serve.port", "PORT", "port to listen on")],
    "export": [("--version", "export.adapter", "N", "a registry version number instead of the champion"),
               ("--run", "export.adapter", "RUN_ID", "an MLflow run id: that run's best adapter"),
               ("--out", "export.out", "DIR", "output folder"),
               ("--gguf", "export.gguf", "DTYPE", "GGUF precision: float16, float32 or none")],
}


def shorthand_overrides(command: str, flags: dict[str, Any]) -> list[str]:
    """``medlora serve --port 8001`` -> ``serve.port=8001``: flags become overrides, checked like any other."""
    out = [f"{key}='{value}'" if flag == "--run" else f"{key}={value}"  # quoted: a run id stays text
           for flag, key, _, _ in SHORTHANDS.get(command, []) if (value := flags.get(flag[2:])) is not None]
    return out + (["serve.log_questions=true"] if flags.get("log_questions") else [])
