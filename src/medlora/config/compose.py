"""Compose the Hydra config once and check it once into typed values (:mod:`medlora.config.schema`).

Configs are looked up in the workspace's ``conf/`` first, then in the packaged defaults, so a
workspace holds only what it changes (an experiment, a study, a model) and can override any
packaged file by giving its own of the same name. Every problem in a config is reported in one
:class:`UserError`, one clause each, each with its fix.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from pydantic import ValidationError

import medlora.config.workspace as workspace
from medlora.config.schema import RunConfig
from medlora.config.study_schema import StudyConfig
from medlora.errors import UserError

# command-line flags that are shorthands for config overrides: command -> (flag, config key, metavar, help)
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

_KEY_FIX = "check the key against `medlora <command> --cfg`, use key=value, and +key=value only to add a new key"


def compose(overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """The config ``config.yaml`` composes to, with command-line style overrides, resolved."""
    from hydra import compose as hydra_compose
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with _search_path():
            cfg = hydra_compose(config_name="config", overrides=list(overrides))
        OmegaConf.resolve(cfg)
    except (HydraException, OmegaConfBaseException) as err:
        head = str(err).strip().splitlines()[0]
        raise UserError(f"bad override: {head} (fix: {_KEY_FIX})") from None
    return cfg


@contextmanager
def _search_path() -> Iterator[None]:
    """Hydra initialised on [the workspace's conf/, the packaged conf/], in that order.

    Hydra's public ``initialize_config_dir`` takes one folder, and ``hydra.searchpath`` entries
    come after it, so a workspace file could not replace a packaged one of the same name: the
    search path is built as ``initialize_config_dir`` builds its own, with the second folder
    placed right after the first (before Hydra's structured-config source, which must stay last).
    """
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path
    from hydra.core.config_search_path import SearchPathQuery
    from hydra.core.global_hydra import GlobalHydra

    own = workspace.conf_dir()
    search = create_config_search_path(f"file://{own or workspace.PACKAGED_CONF}")
    if own:
        search.append("medlora", f"file://{workspace.PACKAGED_CONF}", anchor=SearchPathQuery(provider="main"))
    GlobalHydra.instance().clear()
    Hydra.create_main_hydra2(task_name="medlora", config_search_path=search)
    try:
        yield
    finally:
        GlobalHydra.instance().clear()


def to_run_config(cfg: DictConfig) -> RunConfig:
    """Check a composed config (all but its ``study`` group); raise one UserError listing every problem."""
    tree = _container(cfg)
    tree.pop("study", None)
    try:
        return RunConfig.model_validate({**tree, "raw": _container(cfg)})
    except ValidationError as err:
        raise UserError("invalid config: " + "; ".join(_problems(err, ""))) from None


def load_run_config(overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    return to_run_config(compose(overrides))


def overrides_from_file(path: str) -> list[str]:
    """The ``overrides`` list of a best.yaml."""
    import yaml

    try:
        overrides = yaml.safe_load(Path(path).read_text())["overrides"]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as err:
        raise UserError(f"cannot read overrides from {path} ({type(err).__name__}) "
                        "(fix: pass a best.yaml written by `medlora sweep` or `medlora report`)") from None
    return [str(o) for o in overrides]


def shorthand_overrides(command: str, flags: dict[str, Any]) -> list[str]:
    """``medlora serve --port 8001`` -> ``serve.port=8001``: flags become overrides, checked like any other."""
    out = [f"{key}='{value}'" if flag == "--run" else f"{key}={value}"  # quoted: a run id stays text
           for flag, key, _, _ in SHORTHANDS.get(command, []) if (value := flags.get(flag[2:])) is not None]
    return out + (["serve.log_questions=true"] if flags.get("log_questions") else [])


def to_study_config(cfg: DictConfig) -> StudyConfig:
    """Check the ``study`` group of a composed config; raise one UserError listing every problem."""
    study = dict(_container(cfg)["study"])
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
        found += _problems(err, "study", list(leaves))
        checked = None
    if found:
        raise UserError("invalid config: " + "; ".join(found))
    return checked


# ---------------------------------------------------------------- helpers


def _container(cfg: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True)


def _leaf_specs(tree: dict, prefix: str = "") -> dict[str, Any]:
    """``{"train": {"batch_size": {"type": ...}}}`` -> ``{"train.batch_size": {"type": ...}}``."""
    leaves: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and "type" not in value:
            leaves.update(_leaf_specs(value, f"{prefix}{key}."))
        elif value is not None:  # null removes a key inherited from another study file
            leaves[f"{prefix}{key}"] = value
    return leaves


def _problems(err: ValidationError, prefix: str, space_keys: list[str] | None = None) -> list[str]:
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
            out.append(f"{key} is not a config key (fix: {_KEY_FIX})")
        elif e["type"] == "missing":
            out.append(f"{key} is missing (fix: +{key}=<value>, see the packaged default with --cfg)")
        else:
            message = e["msg"][:1].lower() + e["msg"][1:]
            out.append(f"{key}={_shown(e['input'])}: {message} (fix: {_fix(e, key)})")
    return out


def _fix(error: dict, key: str) -> str:
    if error["type"] == "literal_error":
        return f"{key}={error['ctx']['expected'].replace(chr(39), '')}"
    if error["type"].startswith("bool"):
        return f"{key}=true or {key}=false"
    if error["type"] == "string_pattern_mismatch":
        return f"{key}=<a plain name: letters, digits, -, _ and .>"
    try:
        default = OmegaConf.select(compose([]), key)
    except UserError:
        default = None
    if isinstance(default, (bool, int, float, str)):
        return f"e.g. {key}={default}, the default"
    return f"see `medlora <command> --cfg` for {key}"


def _shown(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."
