"""Promote a study's best adapter (or one training run's) to the MLflow model registry; roll back.

The registered model is ``medlora-<model name>`` (one per base model). Promoting
adds a new version (never deletes one), moves alias ``champion`` to it and gives
the previous champion alias ``previous``. ``rollback`` swaps the two aliases.

With a ``package`` (the CLI passes :func:`medlora.answers.mlflow_model.save`), the version's
source is an MLflow Model holding the adapter and the model card, logged on the trial's run
under ``registered_model/<name>-v<N>/``; without one it is the run's ``adapters/best`` folder, as
earlier releases registered it. :mod:`medlora.registry.champion` loads both.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from medlora import tracking
from medlora.config import RunConfig, StudyConfig
from medlora.errors import UserError
from medlora.config.secrets import mask
from medlora.files import temporary_dir
from medlora.registry import marks, model_card
from medlora.registry.adapter_check import check_adapter_folder
from medlora.registry.names import CHAMPION, PREVIOUS, alias_version, registered_name
from medlora.study.answer_check import worse_than_base
from medlora.study.report import best_trial
from medlora.study.storage import existing_study

# package(run_cfg, adapter_dir, model_card_markdown, dst, version_tags) writes an MLflow Model into dst
Package = Callable[[RunConfig, Path, str, Path, dict], None]
RUN_PARAMS = ("train.batch_size", "train.iters", "train.learning_rate", "lora.num_layers", "lora.rank")


def check_adapter(artifact_uri: str) -> None:
    """Refuse an adapter folder that mlx-lm could not load (missing or corrupt files)."""
    with temporary_dir("adapter-check") as tmp:
        try:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=artifact_uri, dst_path=str(tmp)))
        except Exception:  # noqa: BLE001 - an artifact that is not there: the check below names it
            local = tmp / "missing"
        check_adapter_folder(local, artifact_uri, "promote another trial or rerun it")


def promote(study_cfg: StudyConfig, run_cfg: RunConfig, package: Package | None = None):
    """Register the best feasible complete trial's best adapter; move ``champion``; keep ``previous``."""
    study = existing_study(study_cfg)
    best = best_trial(study, study_cfg.objective)
    if best is None:
        raise UserError(f"study {study_cfg.name!r} has no complete trial within the memory cap "
                        f"(fix: run `medlora sweep study.name={study_cfg.name}` until one completes)")
    worse = worse_than_base(study, best)
    if worse is not None:  # a fine-tuned model that answers worse than the one it started from is not promoted
        raise UserError(f"not promoted: {worse} (fix: keep the current champion, search on with `medlora sweep "
                        f"study.name={study_cfg.name}`, or, knowing this, `medlora promote --run "
                        f"{best.user_attrs['run_id']}`)")
    tracking.connect(run_cfg.paths)
    client = MlflowClient()
    try:
        run = client.get_run(best.user_attrs["run_id"])
    except MlflowException:
        raise UserError(f"the MLflow store {mask(run_cfg.paths.tracking_uri)} has no run of study {study_cfg.name!r} "
                        f"(trial #{best.number}, run {best.user_attrs['run_id']}) (fix: the paths.mlruns or "
                        "paths.mlflow_server the study ran with)") from None
    # one readable tag per fact and per searched parameter (the reproducing overrides are in best.yaml)
    tags = {"base_model": run_cfg.model.name, "study": study_cfg.name, "trial": str(best.number),
            "run": run.info.run_name, "best_val_loss": f"{best.value:.4f}",
            "base_model_parameters": run.data.params.get("model_parameters", "?"), **best.params}
    return _register(client, run, tags, run_cfg, package)


def promote_run(run_cfg: RunConfig, run_id: str, package: Package | None = None):
    """Register the best adapter of training run ``run_id`` (e.g. one ``medlora train``); move the aliases."""
    tracking.require_store(run_cfg.paths, "(fix: `medlora train` first, then promote its run id)")
    tracking.connect(run_cfg.paths)
    client = MlflowClient()
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise UserError(f"no MLflow run {run_id} in {mask(run_cfg.paths.tracking_uri)} "
                        "(fix: the id `medlora train` printed, or see `medlora ui`)") from None
    losses = [m.value for m in client.get_metric_history(run_id, "val_loss") if m.step > 0]
    params = {k: run.data.params[k] for k in RUN_PARAMS if k in run.data.params}
    tags = {"base_model": run_cfg.model.name, "run": run.info.run_name, "run_id": run_id,
            "best_val_loss": f"{min(losses):.4f}" if losses else "nan",
            "base_model_parameters": run.data.params.get("model_parameters", "?"), **params}
    return _register(client, run, tags, run_cfg, package)


def _register(client: MlflowClient, run, tags: dict, run_cfg: RunConfig, package: Package | None):
    source = f"{run.info.artifact_uri}/adapters/best"
    check_adapter(source)
    name = registered_name(run_cfg)
    with tracking.registry_lock(run_cfg.paths):
        try:
            client.create_registered_model(name, description=f"LoRA adapters for {run_cfg.model.name}, by medlora")
        except MlflowException:
            pass  # exists already
        if package is not None:
            source = _log_mlflow_model(client, name, run, tags, run_cfg, package, source)
        origin = (f"study {tags['study']} trial #{tags['trial']}" if "study" in tags else f"run {run.info.run_id}")
        loss = float(tags["best_val_loss"])
        version = client.create_model_version(
            name, source=source, run_id=run.info.run_id, tags=tracking.fields(tags),
            description=f"{origin}: best validation loss {loss:.4f}" if math.isfinite(loss) else origin)
        old = alias_version(client, name, CHAMPION)
        client.set_registered_model_alias(name, CHAMPION, version.version)
        if old is not None and old.version != version.version:
            client.set_registered_model_alias(name, PREVIOUS, old.version)
        model_card.write(client, run_cfg, client.get_model_version(name, version.version))
        marks.mark_aliases(client, name)
    return version, old


def _log_mlflow_model(client: MlflowClient, name: str, run, tags: dict, run_cfg: RunConfig, package: Package,
                      adapter_uri: str) -> str:
    """Build the MLflow Model of the next version and log it on ``run``; return its artifact URI."""
    number = 1 + max((int(v.version) for v in client.search_model_versions(f"name='{name}'")), default=0)
    card = model_card.for_tags(run_cfg, str(number), run.info.run_id, tags)
    path = f"registered_model/{name}-v{number}"
    with temporary_dir("package") as tmp:
        adapter = Path(mlflow.artifacts.download_artifacts(artifact_uri=adapter_uri, dst_path=f"{tmp}/adapter"))
        package(run_cfg, adapter, card, Path(tmp) / "model", {**tags, "version": str(number)})
        client.log_artifacts(run.info.run_id, f"{tmp}/model", path)
    return f"{run.info.artifact_uri}/{path}"


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
