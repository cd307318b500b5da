"""kill -9 anywhere, rerun at once: the same `medlora sweep` loses no trial and finishes the study.

Each case starts a tiny study in a subprocess that SIGKILLs itself at a named point
(``medlora.faults``), reruns the same command at once or (past the heartbeat's grace period)
3 s later, and checks the Optuna storage and the MLflow store as they are (read with a plain
MLflow client: medlora's own would close dead runs itself). A killed `medlora train` has its run
closed and its temporary folder removed by the next command.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import optuna
import pytest
from conftest import isolated_overrides
from mlflow.tracking import MlflowClient

from medlora.config import compose, load_run_config, to_study_config
from medlora.study.storage import existing_study

N_TRIALS = 3
# point -> the occurrence to die at: the second trial for in-trial points, so one trial has finished before
KILLS = {"prepare": "prepare", "convert": "convert", "train": "train:7", "evaluate": "evaluate:5",
         "log_artifacts": "log_artifacts:2"}


def sweep(overrides, kill_at=None):
    env = {k: v for k, v in os.environ.items() if k != "MEDLORA_KILL_AT"}
    if kill_at:
        env["MEDLORA_KILL_AT"] = kill_at
    return subprocess.run([sys.executable, "-m", "medlora.cli", "sweep", *overrides], env=env,
                          capture_output=True, text=True, timeout=600)


# Every point is rerun at once (only the dead-worker check can recover); a kill while training and one while logging
# the trial's artifacts are also rerun past the grace period (the heartbeat's path). Before a trial starts (prepare,
# convert) there is no trial for the heartbeat to fail, so a later rerun tests nothing more; a rerun 1 s later took
# the at-once path. CI time: 15 cases -> 7 (~50 s each).
CASES = [(point, 0) for point in KILLS] + [(point, 3) for point in ("train", "log_artifacts")]


@pytest.mark.slow
@pytest.mark.parametrize(("point", "delay"), CASES,
                         ids=[f"{p}-{'rerun-at-once' if d == 0 else 'after-grace'}" for p, d in CASES])
def test_kill_9_then_rerun_loses_nothing(point, delay, tmp_path, model_cache, small_csv):
    models = tmp_path / "models" if point == "convert" else model_cache  # a fresh cache to hit the conversion
    overrides = isolated_overrides(tmp_path, models, small_csv) + [
        # at once the heartbeat's grace period (10 min) is far away: only the check that the worker's
        # process is gone (host, pid, start time) can recover; after-grace runs with a 2 s grace period
        "study=tiny", f"study.n_trials={N_TRIALS}", *(["study.heartbeat_seconds=1", "study.grace_seconds=2"]
                                                     if delay >= 3 else ["study.grace_seconds=600"]),
        "study.search_space.train.batch_size.choices=[1,2]", "study.pruner.name=none"]
    killed = sweep(overrides, KILLS[point])
    assert killed.returncode == -9, killed.stderr[-2000:]

    study_cfg = to_study_config(compose(overrides))
    before = {}
    if study_cfg.dir.joinpath("optuna.db").exists():
        before = {t.number: (t.state, t.value) for t in existing_study(study_cfg).get_trials()
                  if t.state == optuna.trial.TrialState.COMPLETE}
    if point in ("train", "evaluate", "log_artifacts"):
        assert len(before) == 1, "one trial finished before the kill"
    if point == "prepare":  # no half-written split: only the temporary folder the kill left behind
        assert [d.name for d in (tmp_path / "processed").iterdir() if not d.name.startswith(".tmp-")] == []

    time.sleep(delay)  # 3 s: past the grace period, the killed trial's heartbeat is stale too
    resumed = sweep(overrides)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    study = existing_study(study_cfg)
    trials = study.get_trials()
    assert [t.number for t in trials] == list(range(len(trials)))  # numbering continues, nothing duplicated
    finished = [t for t in trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    assert len(finished) == N_TRIALS
    for number, (state, value) in before.items():  # finished trials are intact
        assert (trials[number].state, trials[number].value) == (state, value)
    failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    if point in ("train", "evaluate", "log_artifacts"):
        (dead,) = failed
        retried = [t for t in trials if t.system_attrs.get("failed_trial") == dead.number]
        assert retried and retried[0].params == dead.params
    else:
        assert failed == []

    assert not [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
    client = MlflowClient(tracking_uri=load_run_config(overrides).paths.tracking_uri)
    exp = client.get_experiment_by_name(study_cfg.name)
    runs = client.search_runs([exp.experiment_id])
    assert all(r.info.status != "RUNNING" for r in runs)
    children = {r.data.tags["trial_number"]: r for r in runs if "trial_number" in r.data.tags}
    assert sorted(children, key=int) == [str(t.number) for t in trials]
    for t in finished:
        if t.user_attrs.get("state") == "COMPLETE":
            files = {a.path for a in client.list_artifacts(children[str(t.number)].info.run_id, "adapters/best")}
            assert "adapters/best/adapters.safetensors" in files
    for t in failed:
        assert children[str(t.number)].info.status == "FAILED"
        assert "died" in children[str(t.number)].data.tags["error"]
        assert children[str(t.number)].data.tags["outcome"] == "failed"


@pytest.mark.slow
def test_killed_train_is_closed_and_cleaned_by_the_next_command(tmp_path, model_cache, small_csv):
    overrides = isolated_overrides(tmp_path, model_cache, small_csv)
    env = {**os.environ, "MEDLORA_KILL_AT": "train:2"}
    killed = subprocess.run([sys.executable, "-m", "medlora", "train", *overrides], env=env,
                            capture_output=True, text=True, timeout=600)
    assert killed.returncode == -9, killed.stderr[-2000:]
    uri = load_run_config(overrides).paths.tracking_uri
    (run,) = MlflowClient(tracking_uri=uri).search_runs(["0", *_experiment_ids(uri)])
    assert run.info.status == "RUNNING"  # as the kill left it
    left = _temporary_dirs_of(run.data.tags["medlora.owner"])
    assert left, "the killed run's temporary adapter folder is there before the next command"

    again = subprocess.run([sys.executable, "-m", "medlora", "train", *overrides], capture_output=True,
                           text=True, timeout=600)  # the next command that opens the store
    assert again.returncode == 0, again.stderr[-2000:]
    closed = MlflowClient(tracking_uri=uri).get_run(run.info.run_id)
    assert closed.info.status == "FAILED" and "died" in closed.data.tags["error"]
    assert not [d for d in left if d.exists()]


def _experiment_ids(uri: str) -> list[str]:
    return [e.experiment_id for e in MlflowClient(tracking_uri=uri).search_experiments()]


def _temporary_dirs_of(owner: str) -> list:
    from pathlib import Path
    import tempfile

    found = []
    for folder in Path(tempfile.gettempdir()).glob("medlora-*"):
        marker = folder / ".medlora-owner"
        if marker.is_file() and marker.read_text() == owner:
            found.append(folder)
    return found
