"""Promote a study's best adapter to the MLflow model registry; roll back.

The registered model is ``medlora-<model name>`` (one per base model). Promoting
adds a new version (never deletes one), moves alias ``champion`` to it and gives
the previous champion alias ``previous``. ``rollback`` swaps the two aliases.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from medlora import tracking
from medlora.config import RunConfig, StudyConfig
from medlora.errors import UserError
from medlora.registry import marks, model_card
from medlora.registry.names import CHAMPION, PREVIOUS, alias_version, registered_name
from medlora.study.report import best_trial
from medlora.study.storage import existing_study


def check_adapter(artifact_uri: str) -> None:
    """Refuse an adapter folder that mlx-lm could not load (missing or corrupt files)."""
    from safetensors import safe_open

    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=artifact_uri, dst_path=tmp))
            config = json.loads((local / "adapter_config.json").read_text())
            with safe_open(str(local / "adapters.safetensors"), framework="numpy") as f:
                names = list(f.keys())
        except Exception as err:  # missing file, bad JSON, truncated safetensors ...
            raise UserError(f"adapter at {artifact_uri} is missing or corrupt ({type(err).__name__}: "
                            f"{str(err).splitlines()[0] if str(err) else ''}) (fix: promote another trial or rerun it)") from None
    if config.get("fine_tune_type") != "lora" or not names:
        raise UserError(f"adapter at {artifact_uri} has no LoRA weights (fix: promote another trial)")


def promote(study_cfg: StudyConfig, run_cfg: RunConfig):
    """Register the best feasible complete trial's best adapter; move ``champion``; keep ``previous``."""
    study = existing_study(study_cfg)
    best = best_trial(study)
    if best is None:
        raise UserError(f"study {study_cfg.name!r} has no complete trial within the memory cap "
                        f"(fix: run `medlora sweep study.name={study_cfg.name}` until one completes)")
    tracking.connect(run_cfg.paths)
    client = MlflowClient()
    run = client.get_run(best.user_attrs["run_id"])
    source = f"{run.info.artifact_uri}/adapters/best"
    check_adapter(source)

    name = registered_name(run_cfg)
    with tracking.registry_lock(run_cfg.paths):
        return _register_and_move_aliases(client, name, source, run, best, study_cfg, run_cfg)


def _register_and_move_aliases(client: MlflowClient, name: str, source: str, run, best, study_cfg, run_cfg):
    try:
        client.create_registered_model(name, description=f"LoRA adapters for {run_cfg.model.name}, by medlora")
    except MlflowException:
        pass  # exists already
    version = client.create_model_version(
        name, source=source, run_id=run.info.run_id,
        # one readable tag per fact and per searched parameter (the reproducing overrides are in best.yaml)
        tags=tracking.fields({"base_model": run_cfg.model.name, "study": study_cfg.name, "trial": best.number,
                              "run": run.info.run_name, "best_val_loss": f"{best.value:.4f}",
                              "base_model_parameters": run.data.params.get("model_parameters", "?"),
                              **best.params}),
        description=f"study {study_cfg.name} trial #{best.number}: best validation loss {best.value:.4f}",
    )
    old = alias_version(client, name, CHAMPION)
    client.set_registered_model_alias(name, CHAMPION, version.version)
    if old is not None and old.version != version.version:
        client.set_registered_model_alias(name, PREVIOUS, old.version)
    model_card.write(client, run_cfg, client.get_model_version(name, version.version))
    marks.mark_aliases(client, name)
    return version, old


def rollback(run_cfg: RunConfig):
    """Swap ``champion`` and ``previous``: the previous champion answers again."""
    tracking.require_store(run_cfg.paths, "(fix: `medlora sweep` then `medlora promote`, twice, before a rollback)")
    tracking.connect(run_cfg.paths)
    client = MlflowClient()
    name = registered_name(run_cfg)
    with tracking.registry_lock(run_cfg.paths):
        champion, previous = alias_version(client, name, CHAMPION), alias_version(client, name, PREVIOUS)
        if previous is None:
            raise UserError(f"{name} has no 'previous' version to roll back to (fix: promote at least twice first)")
        client.set_registered_model_alias(name, CHAMPION, previous.version)
        if champion is not None:
            client.set_registered_model_alias(name, PREVIOUS, champion.version)
        marks.mark_aliases(client, name)
    return previous, champion
