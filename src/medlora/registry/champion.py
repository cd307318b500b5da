"""The champion (or another adapter): find it in the registry, download it, load it onto the base model.

``medlora ask``, ``evaluate``, ``serve``, ``export`` and the Python API load adapters through here::

    import medlora
    from medlora.config import load_run_config
    from medlora.registry.champion import load_with_champion

    model, tokenizer, version = load_with_champion(load_run_config())

A registered version's source is either an adapter folder (``adapter_config.json`` +
``adapters.safetensors``; versions promoted by earlier releases) or an MLflow Model (pyfunc,
:mod:`medlora.answers.mlflow_model`) that holds the adapter as its artifact ``adapter``: both load.
"""

from __future__ import annotations

import re
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

ADAPTER_ARTIFACT = "adapter"  # the adapter's name among the MLflow Model's artifacts
RUN_ID = re.compile(r"[0-9a-f]{32}")


def adapter_in(folder: Path) -> Path:
    """The adapter folder inside a downloaded version source: the folder itself, or an MLflow Model's artifact."""
    if not (folder / "MLmodel").is_file():
        return folder
    from mlflow.models import Model

    artifacts = Model.load(str(folder / "MLmodel")).flavors["python_function"].get("artifacts", {})
    if ADAPTER_ARTIFACT not in artifacts:
        raise UserError(f"the MLflow model in {folder} has no '{ADAPTER_ARTIFACT}' artifact "
                        "(fix: promote the adapter again with `medlora promote`)")
    return folder / artifacts[ADAPTER_ARTIFACT]["path"]


def download_version(version, dst: Path) -> Path:
    """Download registered ``version`` into ``dst``; return its adapter folder (either kind of source),
    checked to be loadable."""
    where = f"{version.name} version {version.version} ({version.source})"
    try:
        folder = adapter_in(Path(mlflow.artifacts.download_artifacts(artifact_uri=version.source, dst_path=str(dst))))
    except Exception:  # noqa: BLE001 - gone from the artifact store, or an unreadable MLmodel: named below
        folder = dst / "missing"
    check_adapter_folder(folder, where, "medlora promote --rollback, or promote again")
    return folder


def _client(run_cfg: RunConfig) -> MlflowClient:
    tracking.require_store(run_cfg.paths, "(fix: `medlora sweep` then `medlora promote`)")
    tracking.connect(run_cfg.paths)
    return MlflowClient()


def champion_adapter(run_cfg: RunConfig, dst: Path) -> tuple[Path, object]:
    """Download the champion adapter of ``run_cfg.model`` into ``dst``; return (folder, model version)."""
    client = _client(run_cfg)
    version = alias_version(client, registered_name(run_cfg), CHAMPION)
    if version is None:
        raise UserError(f"no champion for model {run_cfg.model.name} in {run_cfg.paths.mlruns} "
                        "(fix: `medlora sweep` then `medlora promote`)")
    return download_version(version, dst), version


def resolve_adapter(run_cfg: RunConfig, ref: str, dst: Path) -> tuple[Path, str, object]:
    """The adapter named by ``ref`` (``champion``, a registry version number, an MLflow run id or a
    folder), downloaded into ``dst``; returns (folder, label, registered version or None)."""
    if ref == CHAMPION:
        folder, version = champion_adapter(run_cfg, dst)
        return folder, f"champion v{version.version}", version
    if ref.isdigit():
        name = registered_name(run_cfg)
        try:
            version = _client(run_cfg).get_model_version(name, ref)
        except mlflow.exceptions.MlflowException:
            raise UserError(f"{name} has no version {ref} (fix: `medlora ui` lists the versions; "
                            "or use the champion)") from None
        return download_version(version, dst), f"v{ref}", version
    if RUN_ID.fullmatch(ref):
        _client(run_cfg)
        try:
            local = mlflow.artifacts.download_artifacts(f"runs:/{ref}/adapters/best", dst_path=str(dst))
        except Exception as err:  # noqa: BLE001 - unknown run, or a run without the artifact
            raise UserError(f"run {ref} has no adapters/best artifact ({type(err).__name__}) "
                            "(fix: the id of a finished `medlora train` run or study trial)") from None
        return Path(local), f"run {ref[:8]}", None
    if Path(ref).expanduser().is_dir():
        return Path(ref).expanduser(), Path(ref).name, None
    raise UserError(f"adapter {ref!r} is not 'champion', a registry version number, a 32-hex MLflow run id "
                    "or an adapter folder (fix: champion, e.g. --version 3, or --run <run id>)")


def load_with_champion(run_cfg: RunConfig):
    """Base model + the registry's ``champion`` adapter for ``run_cfg.model``; returns (model, tokenizer, version)."""
    with temporary_dir("champion") as tmp:
        adapter_dir, version = champion_adapter(run_cfg, Path(tmp))
        model, tokenizer = load_with_adapter(run_cfg, adapter_dir)
    return model, tokenizer, version


def load_adapter(run_cfg: RunConfig, ref: str):
    """Base model + the adapter named by ``ref`` (see :func:`resolve_adapter`); returns (model, tokenizer, label)."""
    with temporary_dir("adapter") as tmp:
        adapter_dir, label, _ = resolve_adapter(run_cfg, ref, Path(tmp))
        model, tokenizer = load_with_adapter(run_cfg, adapter_dir)
    return model, tokenizer, label
