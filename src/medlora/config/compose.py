"""Compose the Hydra config once and check it once into typed values (:mod:`medlora.config.schema`).

Configs are looked up in the workspace's ``conf/`` first, then in the packaged defaults, so a
workspace holds only what it changes (an experiment, a study, a model) and can override any
packaged file by giving its own of the same name. Every problem in a config is reported in one
:class:`UserError`, one clause each, each with its fix.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from omegaconf import DictConfig, OmegaConf
from pydantic import ValidationError

import medlora.config.workspace as workspace
from medlora.config import secrets
from medlora.config.problems import KEY_FIX, describe
from medlora.config.schema import RunConfig
from medlora.errors import UserError


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
        head = secrets.mask(str(err).strip().splitlines()[0])
        raise UserError(f"bad override: {head} (fix: {KEY_FIX})") from None
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
    tree = container(cfg)
    tree.pop("study", None)
    try:
        return RunConfig.model_validate({**tree, "raw": secrets.masked(container(cfg))})
    except ValidationError as err:
        raise UserError("invalid config: " + "; ".join(describe(err, "", default_of))) from None


def default_of(key: str) -> Any:
    """The value ``key`` has with no override (for the fix of an error), or None."""
    try:
        return OmegaConf.select(compose([]), key)
    except UserError:
        return None


def load_run_config(overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    return to_run_config(compose(overrides))


def container(cfg: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True)
