"""Check the ``study`` group of a composed config into a :class:`StudyConfig`, every problem at once.

Besides the schema, each searched key must be a run-config key, and every value the search can
propose (each choice, both ends of a range) must make a valid run config with the study's trial
overrides: a study never starts a trial that fails on its own config.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from pydantic import ValidationError

import medlora.config.workspace as workspace
from medlora.config.compose import container, default_of
from medlora.config.problems import describe
from medlora.config.schema import RunConfig
from medlora.config.study_schema import StudyConfig
from medlora.errors import UserError


def to_study_config(cfg: DictConfig) -> StudyConfig:
    """Check the ``study`` group of a composed config; raise one UserError listing every problem."""
    study = dict(container(cfg)["study"])
    leaves = _leaf_specs(study.get("search_space") or {})
    found: list[str] = []
    if not leaves:
        found.append("study.search_space is empty: nothing to search (fix: declare at least one key, "
                     "see `medlora sweep --cfg`)")
    for key in leaves:
        if OmegaConf.select(cfg, key, default="__missing__") == "__missing__" or key.startswith("study."):
            found.append(f"study.search_space key {key!r} is not a config key (fix: use e.g. train.batch_size, "
                         "lora.num_layers, train.learning_rate, train.iters)")
    study["search_space"] = [{"key": k, **(v if isinstance(v, dict) else {"type": v})} for k, v in leaves.items()]
    study["trial_overrides"] = [f"{k}={v}" for k, v in (study.get("trial_overrides") or {}).items()]
    name = str(study.get("name"))
    study["dir"] = workspace.resolve(str(cfg.paths.experiments)) / name
    study["storage"] = study.get("storage") or f"sqlite:///{study['dir'] / 'optuna.db'}"
    try:
        checked = StudyConfig.model_validate(study)
    except ValidationError as err:
        found += describe(err, "study", default_of, list(leaves))
        checked = None
    if checked is not None:
        found += _unusable_values(cfg, checked)
    if found:
        raise UserError("invalid config: " + "; ".join(found))
    return checked


def _unusable_values(cfg: DictConfig, study: StudyConfig) -> list[str]:
    """Clauses for every value the search space can propose that makes an invalid trial config."""
    tree = container(cfg)
    tree.pop("study")
    for override in study.trial_overrides:
        key, _, value = override.partition("=")
        _put(tree, key, yaml.safe_load(value))
    found = []
    for spec in study.search_space:
        values = spec.choices if spec.type == "categorical" else (spec.low, spec.high)
        for value in (int(v) if spec.type == "int" else v for v in values):
            trial_tree = copy.deepcopy(tree)
            _put(trial_tree, spec.key, value)
            try:
                RunConfig.model_validate({**trial_tree, "raw": {}})
            except ValidationError as err:
                why = describe(err, "", default_of)[0]
                found.append(f"study.search_space {spec.key} can propose {value!r}, which makes an invalid trial: "
                             f"{why.split(' (fix:')[0]} (fix: keep {spec.key} within what the run config accepts)")
                break
    return found


def _put(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        tree = tree.setdefault(part, {})
    tree[leaf] = value


def _leaf_specs(tree: dict, prefix: str = "") -> dict[str, Any]:
    """``{"train": {"batch_size": {"type": ...}}}`` -> ``{"train.batch_size": {"type": ...}}``."""
    leaves: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and "type" not in value:
            leaves.update(_leaf_specs(value, f"{prefix}{key}."))
        elif value is not None:  # null removes a key inherited from another study file
            leaves[f"{prefix}{key}"] = value
    return leaves


