"""Refuse an adapter folder that mlx-lm could not load, before an alias moves or a model is built on it."""

from __future__ import annotations

import json
from pathlib import Path

from medlora.errors import UserError


def check_adapter_folder(local: Path, where: str, fix: str) -> None:
    """UserError (naming ``where`` and ``fix``) unless ``local`` holds a readable LoRA adapter."""
    from safetensors import safe_open

    try:
        config = json.loads((Path(local) / "adapter_config.json").read_text())
        with safe_open(str(Path(local) / "adapters.safetensors"), framework="numpy") as f:
            names = list(f.keys())
    except Exception as err:  # missing file, bad JSON, truncated safetensors ...
        detail = str(err).splitlines()[0] if str(err) else ""
        raise UserError(f"adapter at {where} is missing or corrupt ({type(err).__name__}: {detail}) "
                        f"(fix: {fix})") from None
    if config.get("fine_tune_type") != "lora" or not names:
        raise UserError(f"adapter at {where} has no LoRA weights (fix: {fix})")
