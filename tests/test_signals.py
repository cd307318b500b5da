"""A graceful stop (SIGTERM, as Ctrl-C) ends the MLflow run KILLED and exits non-zero with a resume hint."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from mlflow.tracking import MlflowClient

from medlora import tracking
from medlora.config import load_run_config


def test_sigterm_marks_the_run_killed_and_says_how_to_resume(tiny_overrides):
    overrides = tiny_overrides + ["train.iters=2000", "train.steps_per_eval=1000"]
    proc = subprocess.Popen([sys.executable, "-m", "medlora.cli", "train", *overrides],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    cfg = load_run_config(overrides)
    tracking.connect(cfg.paths)
    client = MlflowClient()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # wait until training has reported once
        exp = client.get_experiment_by_name(cfg.experiment_name) if cfg.paths.mlruns.exists() else None
        runs = client.search_runs([exp.experiment_id]) if exp else []
        if runs and client.get_metric_history(runs[0].info.run_id, "train_loss"):
            break
        time.sleep(0.5)
    else:
        proc.kill()
        raise AssertionError("training never reported")
    os.kill(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "interrupted" in err and "rerun with: medlora train" in err
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "KILLED"


def test_sigterm_during_a_sweep_fails_the_trial_cleanly_and_says_how_to_resume(tiny_overrides):
    import optuna

    from medlora.config import compose, to_study_config
    from medlora.study import existing_study

    overrides = tiny_overrides + ["study=tiny", "study.n_trials=2", "study.search_space.train.batch_size.choices=[1]",
                                  "study.search_space.train.iters.low=400", "study.search_space.train.iters.high=400",
                                  "study.search_space.train.iters.step=1", "study.pruner.name=none"]
    proc = subprocess.Popen([sys.executable, "-m", "medlora.cli", "sweep", *overrides],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    cfg = load_run_config(overrides)
    tracking.connect(cfg.paths)
    client = MlflowClient()
    deadline = time.monotonic() + 180
    child = None
    while time.monotonic() < deadline and child is None:
        exp = client.get_experiment_by_name("tiny") if (cfg.paths.mlruns / "mlflow.db").exists() else None
        for run in client.search_runs([exp.experiment_id]) if exp else []:
            if "trial_number" in run.data.tags and client.get_metric_history(run.info.run_id, "train_loss"):
                child = run
        time.sleep(0.5)
    assert child is not None, "no trial started training"
    os.kill(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert err.strip().splitlines()[-1].startswith("medlora: interrupted") and "resume with: medlora sweep" in err
    assert client.get_run(child.info.run_id).info.status == "KILLED"
    study = existing_study(to_study_config(compose(overrides)))
    assert [t.state for t in study.get_trials()] == [optuna.trial.TrialState.FAIL]
