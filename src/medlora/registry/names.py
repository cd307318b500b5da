"""Names in the registry: one registered model per base model, aliases champion and previous."""

from __future__ import annotations

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from medlora.config import RunConfig

CHAMPION, PREVIOUS = "champion", "previous"


def registered_name(cfg: RunConfig) -> str:
    return f"medlora-{cfg.model.name}"


def alias_version(client: MlflowClient, name: str, alias: str):
    """The model version holding ``alias``, or None."""
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None
