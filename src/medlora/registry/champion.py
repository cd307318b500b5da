"""The champion: download its adapter from the registry and load it onto the base model.

``medlora ask``, ``medlora evaluate`` and the Python API load the champion through here::

    import medlora
    from medlora.config import load_run_config
    from medlora.registry.champion import load_with_champion

    model, tokenizer, version = load_with_champion(load_run_config())
"""

from __future__ import annotations

from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from medlora import tracking
from medlora.config import RunConfig
from medlora.errors import UserError
from medlora.files import temporary_dir
from medlora.models.generation import load_with_adapter
from medlora.registry.adapter_check import check_adapter_folder
from medlora.registry.names import CHAMPION, alias_version, registered_name


def champion_adapter(run_cfg: RunConfig, dst: Path) -> tuple[Path, object]:
    """Download the champion adapter of ``run_cfg.model`` into ``dst``; return (folder, model version)."""
    tracking.require_store(run_cfg.paths, "(fix: `medlora sweep` then `medlora promote`)")
    tracking.connect(run_cfg.paths)
    client = MlflowClient()
    name = registered_name(run_cfg)
    version = alias_version(client, name, CHAMPION)
    if version is None:
        raise UserError(f"no champion for model {run_cfg.model.name} in {run_cfg.paths.mlruns} "
                        "(fix: `medlora sweep` then `medlora promote`)")
    fix = "medlora promote --rollback, or promote again"
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=version.source, dst_path=str(dst)))
    except Exception:  # noqa: BLE001 - gone from the artifact store: the check below names it
        local = dst / "missing"
    check_adapter_folder(local, f"{name} version {version.version} ({version.source})", fix)
    return local, version


def load_with_champion(run_cfg: RunConfig):
    """Base model + the registry's ``champion`` adapter for ``run_cfg.model``; returns (model, tokenizer, version)."""
    with temporary_dir("champion") as tmp:
        adapter_dir, version = champion_adapter(run_cfg, Path(tmp))
        model, tokenizer = load_with_adapter(run_cfg, adapter_dir)
    return model, tokenizer, version
