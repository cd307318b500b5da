"""Run (or resume) a study: calibrate the memory model, then trials until ``n_trials`` have finished.

Running the same command again resumes the study; several workers may share one storage.
Everything a user can get wrong is checked before the study, its storage or its MLflow run
is created.
"""

from __future__ import annotations

import json
import math
import sys
import warnings

import optuna
from mlflow.tracking import MlflowClient
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from medlora import liveness, stopping, tracking
from medlora.config import RunConfig, StudyConfig, load_run_config
from medlora.config.secrets import mask
from medlora.data import splits
from medlora.errors import UserError
from medlora.models.load import n_blocks as count_blocks
from medlora.study import answer_check, bracket, overview, report, verdict
from medlora.study.objective import StudyContext, objective
from medlora.study.space import distribution, fitting_space
from medlora.study.storage import existing_study, load_study, open_storage
from medlora.training import memory

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# A worker stops when finished trials plus those other workers are running reach n_trials, so several
# workers (or a resumed one) share one total instead of each running n_trials of their own.
COUNTED = (*FINISHED, TrialState.RUNNING)


def close_orphaned_runs(study: optuna.Study, parent_run_id: str) -> None:
    """Child runs left RUNNING by a process that died: their trial is FAILED now, so the run is too."""
    failed = {str(t.number) for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))}
    client = MlflowClient()
    run = client.get_run(parent_run_id)
    orphans = client.search_runs(
        [run.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}' and attributes.status = 'RUNNING'",
    )
    for orphan in orphans:
        if orphan.data.tags.get("trial_number") in failed:
            tracking.record(tags={"outcome": "failed", "error": "the process running this trial died; the trial "
                                                                 "was failed by its heartbeat and retried"},
                            run_id=orphan.info.run_id)
            client.set_terminated(orphan.info.run_id, status="FAILED")


def check_same_space(study: optuna.Study, study_cfg: StudyConfig) -> None:
    """Refuse to resume a study with another search space: its trials would not compare (and Optuna
    would fail them one by one)."""
    wanted = {spec.key: distribution(spec) for spec in study_cfg.search_space}
    for trial in study.get_trials(deepcopy=False, states=FINISHED):
        changed = [f"{key}: {_shown(trial.distributions.get(key))} -> {_shown(wanted.get(key))}"
                   for key in sorted(set(wanted) | set(trial.distributions))
                   if not _same(trial.distributions.get(key), wanted.get(key))]
        if changed:
            raise UserError(f"study {study_cfg.name!r} was run with another search space ({'; '.join(changed)}) "
                            f"(fix: a new study.name for the new space, e.g. study.name={study_cfg.name}-2, or "
                            "resume with the space it had)")
        return  # one trial's distributions are the study's: Optuna checks the rest


def _same(stored, wanted) -> bool:
    """Equal, or an int range whose upper end a trial lowered to fit the cap (:func:`space.suggest_all`)."""
    if stored == wanted:
        return True
    ints = optuna.distributions.IntDistribution
    return (isinstance(stored, ints) and isinstance(wanted, ints) and stored.low == wanted.low
            and stored.step == wanted.step and stored.log == wanted.log and stored.high <= wanted.high)


def _shown(dist) -> str:
    if dist is None:
        return "not searched"
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return f"choices {list(dist.choices)}"
    return f"{dist.low:g}..{dist.high:g}" + (" log" if dist.log else "") + (f" step {dist.step:g}" if dist.step else "")


def fail_dead_trials(study: optuna.Study) -> list[int]:
    """Trials whose process died: FAILED now, their parameters queued again. On this host a dead worker
    is recognised at once (host, pid and start time on the trial); others' by the heartbeat's grace period."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # the heartbeat: any host, after study.grace_seconds
        retry = RetryHeartbeatStaleTrialCallback(max_retry=2)
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if liveness.is_dead(trial.user_attrs.get("worker")):
            try:
                study.tell(trial.number, state=TrialState.FAIL)
            except (ValueError, RuntimeError):  # finished meanwhile by another process
                continue
            retry(study, study.get_trials(deepcopy=True)[trial.number])
            failed.append(trial.number)
    return failed


def finished_count(study: optuna.Study, states=FINISHED) -> int:
    return len(study.get_trials(deepcopy=False, states=states))


def baseline_params(study_cfg: StudyConfig, run_cfg: RunConfig) -> dict:
    """The run config's own values for the searched keys, moved into the search space where they fall outside."""
    params = {}
    for spec in study_cfg.search_space:
        section, _, name = spec.key.partition(".")
        value = run_cfg.raw.get(section, {}).get(name)
        if spec.type == "categorical":
            if value in spec.choices:
                params[spec.key] = value
            continue
        value = min(max(value, spec.low), spec.high)
        if spec.step:
            value = spec.low + round((value - spec.low) / spec.step) * spec.step
        params[spec.key] = int(value) if spec.type == "int" else float(value)
    return params


def run_study(study_cfg: StudyConfig, run_cfg: RunConfig, base_overrides: list[str]) -> optuna.Study:
    """Create or resume the study and run trials until ``n_trials`` have finished (or the timeout).

    Everything a user can get wrong (data, model, search space, a cap below the model) is checked
    before the study, its storage or its MLflow run is created.
    """
    if not study_cfg.storage.startswith(f"sqlite:///{study_cfg.dir.resolve()}"):
        open_storage(study_cfg.storage)  # a server or journal elsewhere: reachable, before anything is written
    resumed = _existing(study_cfg)
    n_blocks, mem = checked_memory_model(study_cfg, run_cfg, base_overrides)
    trial_cfg = load_run_config([*base_overrides, *study_cfg.trial_overrides])
    study_cfg = fitting_space(study_cfg, mem, trial_cfg.train, n_blocks if run_cfg.lora.num_layers == -1
                              else run_cfg.lora.num_layers)
    if resumed is not None:
        check_same_space(resumed, study_cfg)
    splits.prepare_from_config(run_cfg.data, run_cfg.paths.processed)
    asked = study_cfg.answers and answer_check.questions(trial_cfg, study_cfg.answers)  # checked before writing
    study = load_study(study_cfg)
    memory.save(mem, study_cfg.dir / "memory_model.json")
    if study_cfg.enqueue_baseline and not study.get_trials(deepcopy=False):  # trial 0: the config as it stands
        study.enqueue_trial(baseline_params(study_cfg, run_cfg), user_attrs={"baseline": True})
    fail_dead_trials(study)
    ctx = StudyContext(study_cfg, tuple(base_overrides), mem, trial_cfg.train, asked)

    searched = [spec.key for spec in study_cfg.search_space]
    experiment = tracking.experiment_id(run_cfg.paths, study_cfg.name)  # connects
    overview.set_view(MlflowClient(), experiment, searched)
    parent_id = study.user_attrs.get("mlflow_parent_run_id")
    with tracking.tracked_run(run_cfg.paths, study_cfg.name, overview.parent_run_name(study_cfg.name),
                              run_id=parent_id, tags={"study": study_cfg.name, "role": "study"}) as parent:
        close_orphaned_runs(study, parent.info.run_id)
        if parent_id is None:
            study.set_user_attr("mlflow_parent_run_id", parent.info.run_id)
            tracking.record(params={"memory_cap_gb": study_cfg.memory_cap_gb, "n_trials": study_cfg.n_trials,
                                    "storage": mask(study_cfg.storage), "searched": json.dumps(searched),
                                    **{f"memory_model.{k}": v for k, v in mem.__dict__.items()}})
        remaining = study_cfg.n_trials - finished_count(study, COUNTED)
        if remaining > 0:
            print(f"medlora: study {study_cfg.name}: {finished_count(study)} trials finished, running up to "
                  f"{remaining} more (cap {study_cfg.memory_cap_gb} GB)", file=sys.stderr)
            study.optimize(
                lambda trial: objective(trial, ctx, n_blocks),
                timeout=study_cfg.timeout_minutes * 60,
                callbacks=after_each_trial(study_cfg),
                catch=(),
                gc_after_trial=True,
            )
        finish(study, study_cfg, trial_cfg, parent.info.run_id, searched, rejudge=remaining > 0)
    return study


def after_each_trial(study_cfg: StudyConfig) -> list:
    """Study callbacks: stop at n_trials (running ones count), promote the first bracket's best, and honour a
    stop lost in a trial's teardown."""
    return [optuna.study.MaxTrialsCallback(study_cfg.n_trials, states=COUNTED), promote_first_bracket(study_cfg),
            lambda _study, _trial: stopping.check()]


def promote_first_bracket(study_cfg: StudyConfig):
    """The study callback that enqueues the first bracket's best configurations (a no-op without one)."""
    fidelity = study_cfg.fidelity
    if not bracket.size(study_cfg):
        return lambda _study, _trial: None
    promote = bracket.Promote(fidelity.first_bracket, fidelity.reduction_factor, fidelity.min_examples)

    def callback(study: optuna.Study, trial) -> None:
        promoted = promote(study, trial)
        if promoted:
            print(f"medlora: first bracket: {fidelity.first_bracket} configurations screened at "
                  f"{fidelity.min_examples} examples; trials {', '.join(map(str, promoted))} go on (trained again "
                  "from the start)", file=sys.stderr)
    return callback


def finish(study: optuna.Study, study_cfg: StudyConfig, trial_cfg: RunConfig, parent_run_id: str,
           searched: list[str], rejudge: bool) -> None:
    """The verdict (again only if trials ran since the last one), outputs, and the parent run's overview."""
    if rejudge or not (study_cfg.dir / "verdict.json").exists():
        judged = verdict.judge(trial_cfg, study, study_cfg.objective, study_cfg.answers)
        if judged is not None:
            verdict.record(judged, study_cfg.dir, parent_run_id)
    best = report.write_study_outputs(study, study_cfg, parent_run=True)["best"]
    overview.mark_best(MlflowClient(), parent_run_id, best.user_attrs.get("run_id") if best else None)
    overview.describe(MlflowClient(), parent_run_id, searched)


def checked_memory_model(study_cfg: StudyConfig, run_cfg: RunConfig,
                         base_overrides: list[str]) -> tuple[int, memory.MemoryModel]:
    """(the model's block count, the calibrated memory model), once layers and cap are checked (nothing is
    written before: the data split is prepared after these checks)."""
    n_blocks = count_blocks(run_cfg.model, run_cfg.paths.models)
    max_layers = _max_value(study_cfg, "lora.num_layers", run_cfg.lora.num_layers)
    if max_layers > n_blocks:
        raise UserError(f"the search space reaches lora.num_layers={max_layers} but model {run_cfg.model.name} "
                        f"has {n_blocks} layers (fix: lower the search space's lora.num_layers high to {n_blocks})")
    # Calibrate on what trials run: the user's overrides plus the study's trial overrides.
    probe_cfg = load_run_config([*base_overrides, *study_cfg.trial_overrides])
    cache_file = study_cfg.dir / "memory_model.json"
    print(f"medlora: memory model for the cap ({cache_file}) ...", file=sys.stderr)
    mem = memory.load_or_calibrate(probe_cfg, n_blocks if max_layers == -1 else max_layers, cache_file)
    if mem.base_gb * memory.SAFETY > study_cfg.memory_cap_gb:
        raise UserError(f"study.memory_cap_gb={study_cfg.memory_cap_gb} is smaller than the model itself "
                        f"({mem.base_gb:.2f} GB before any activations) (fix: study.memory_cap_gb="
                        f"{math.ceil(mem.base_gb * 2 * 10) / 10} or more, or a smaller model)")
    return n_blocks, mem


def _existing(study_cfg: StudyConfig) -> optuna.Study | None:
    try:
        return existing_study(study_cfg)
    except UserError:  # no such study yet
        return None


def _max_value(study_cfg: StudyConfig, key: str, default: int) -> int:
    for spec in study_cfg.search_space:
        if spec.key == key:
            return int(max(spec.choices) if spec.type == "categorical" else spec.high)
    return default
