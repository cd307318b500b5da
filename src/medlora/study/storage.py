"""Open, create or resume a study's Optuna storage, with its sampler and pruner.

Storage is any SQLAlchemy URL (sqlite by default, PostgreSQL for workers on several machines),
with a heartbeat so that a trial whose process died is marked FAILED and retried, or
``journal:<file>`` (Optuna's journal file, several workers on one machine).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

from medlora.config import StudyConfig
from medlora.config.secrets import mask
from medlora.config.study_schema import FidelityConfig, PrunerConfig, SamplerConfig
from medlora.errors import UserError
from medlora.study import bracket


def open_storage(url: str, heartbeat_seconds: int = 20, grace_seconds: int = 60) -> optuna.storages.BaseStorage:
    """An Optuna storage: ``journal:<file>`` (Optuna's journal file, several workers on one machine)
    or any SQLAlchemy URL (sqlite, PostgreSQL for workers on several machines; with a heartbeat)."""
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock, JournalStorage

        path = Path(url[len("journal:"):]).expanduser()
        if not path.parent.is_dir():
            raise UserError(f"cannot open the study storage {mask(url)!r}: folder {path.parent} does not exist "
                            "(fix: create it, or point study.storage elsewhere)")
        return JournalStorage(JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path))))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(
                url,
                heartbeat_interval=heartbeat_seconds,  # seconds between "still alive" beats of a running trial
                grace_period=grace_seconds,  # a trial silent this long is marked FAILED ...
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=2),  # ... and retried
            )
    except Exception as err:  # SQLAlchemy's OperationalError, ArgumentError, missing driver, ...
        raise UserError(f"cannot open the study storage {mask(url)!r}: {mask(str(err).splitlines()[0])} "
                        "(fix: check study.storage, the database server and its credentials)") from None


def make_sampler(cfg: SamplerConfig) -> optuna.samplers.BaseSampler:
    if cfg.name == "random":
        return optuna.samplers.RandomSampler(seed=cfg.seed)
    return optuna.samplers.TPESampler(seed=cfg.seed, n_startup_trials=cfg.n_startup_trials)


def make_pruner(cfg: PrunerConfig, fidelity: FidelityConfig | None = None) -> optuna.pruners.BasePruner:
    if cfg.name == "asha":  # successive halving on examples seen: rungs at min_examples * reduction_factor**k
        halving = optuna.pruners.SuccessiveHalvingPruner(min_resource=fidelity.min_examples,
                                                         reduction_factor=fidelity.reduction_factor,
                                                         min_early_stopping_rate=0)
        if fidelity.first_bracket:  # the first configurations are screened together (medlora.study.bracket)
            return bracket.FirstBracketPruner(halving, fidelity.min_examples, fidelity.reduction_factor)
        return halving
    if cfg.name == "none":
        return optuna.pruners.NopPruner()
    if cfg.name == "threshold":  # prune any trial whose val loss is above `upper`
        return optuna.pruners.ThresholdPruner(upper=cfg.upper, n_warmup_steps=cfg.n_warmup_steps)
    # n_min_trials: prune at a step only against that many completed trials that reached it; with 1,
    # the first long trial alone is "the median" at every step shorter trials never reach
    return optuna.pruners.MedianPruner(n_startup_trials=cfg.n_startup_trials, n_warmup_steps=cfg.n_warmup_steps,
                                       n_min_trials=cfg.n_min_trials)


def existing_study(study_cfg: StudyConfig) -> optuna.Study:
    """An existing study, read-only use (report, promote); never creates storage or a study."""
    missing = UserError(f"no study named {study_cfg.name!r} in {mask(study_cfg.storage)} "
                        f"(fix: check study.name, or run `medlora sweep study.name={study_cfg.name}` first)")
    for prefix in ("sqlite:///", "journal:"):
        if study_cfg.storage.startswith(prefix) and not Path(study_cfg.storage[len(prefix):]).exists():
            raise missing
    try:
        return optuna.load_study(study_name=study_cfg.name, storage=open_storage(study_cfg.storage))
    except KeyError:
        raise missing from None


def load_study(study_cfg: StudyConfig) -> optuna.Study:
    """Create or resume the study (creating its folder only once the storage has opened)."""
    if str(study_cfg.dir.resolve()) in study_cfg.storage:  # the default: a storage file inside the study folder
        study_cfg.dir.mkdir(parents=True, exist_ok=True)
    storage = open_storage(study_cfg.storage, study_cfg.heartbeat_seconds, study_cfg.grace_seconds)
    study_cfg.dir.mkdir(parents=True, exist_ok=True)
    return optuna.create_study(
        study_name=study_cfg.name,
        storage=storage,
        sampler=make_sampler(study_cfg.sampler),
        pruner=make_pruner(study_cfg.pruner, study_cfg.fidelity),
        direction="minimize",
        load_if_exists=True,
    )
