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
