"""A graceful stop (SIGTERM, as Ctrl-C) ends the MLflow run KILLED and exits non-zero with a resume hint."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import optuna
from mlflow.tracking import MlflowClient

from medlora import tracking
from medlora.config import compose, load_run_config, to_study_config
from medlora.study.storage import existing_study


def start_and_wait_for_training(command: str, overrides: list[str], experiment: str):
    """Start `medlora <command>`; return (process, the run that has reported a training loss)."""
    proc = subprocess.Popen([sys.executable, "-m", "medlora.cli", command, *overrides],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    cfg = load_run_config(overrides)
    tracking.connect(cfg.paths)
    client = MlflowClient()
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        exp = client.get_experiment_by_name(experiment) if (cfg.paths.mlruns / "mlflow.db").exists() else None
        for run in client.search_runs([exp.experiment_id]) if exp else []:
            if client.get_metric_history(run.info.run_id, "train_loss"):
                return proc, run
        time.sleep(0.5)
    proc.kill()
    raise AssertionError("training never reported")


def stop(proc) -> str:
    os.kill(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert err.strip().splitlines()[-1].startswith("medlora: interrupted")
    return err


def test_sigterm_marks_the_run_killed_and_says_how_to_rerun(tiny_overrides):
    overrides = tiny_overrides + ["train.iters=2000", "train.steps_per_eval=1000"]
    proc, run = start_and_wait_for_training("train", overrides, "medlora")
    assert "rerun with: medlora train" in stop(proc)
    assert MlflowClient().get_run(run.info.run_id).info.status == "KILLED"


def test_sigterm_during_a_sweep_fails_the_trial_cleanly_and_says_how_to_resume(tiny_overrides):
    overrides = tiny_overrides + ["study=tiny", "study.n_trials=2", "study.search_space.train.batch_size.choices=[1]",
                                  "study.search_space.train.iters.low=400", "study.search_space.train.iters.high=400",
                                  "study.search_space.train.iters.step=1", "study.pruner.name=none"]
    proc, child = start_and_wait_for_training("sweep", overrides, "tiny")
    assert "trial_number" in child.data.tags
    assert "resume with: medlora sweep" in stop(proc)
    killed = MlflowClient().get_run(child.info.run_id)
    assert killed.info.status == "KILLED" and killed.data.tags["outcome"] == "interrupted"
    study = existing_study(to_study_config(compose(overrides)))
    assert [t.state for t in study.get_trials()] == [optuna.trial.TrialState.FAIL]
