"""Several `medlora sweep` workers on one study: PostgreSQL (several machines) and a journal file (one machine).

The workers share one total (`study.n_trials`): the study ends with exactly that many finished
trials, numbered without gaps or duplicates, and MLflow holds one child run per trial.
PostgreSQL comes from ``MEDLORA_TEST_POSTGRES_URL`` (CI starts a server on loopback);
without it the PostgreSQL case is skipped outside CI and fails in CI.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import optuna
import pytest
from conftest import isolated_overrides
from mlflow.tracking import MlflowClient

from medlora import tracking
from medlora.config import compose, load_run_config, to_study_config
from medlora.study.storage import existing_study

N_TRIALS = 4


def storages(tmp_path):
    yield "journal", f"journal:{tmp_path / 'journal.log'}"
    url = os.environ.get("MEDLORA_TEST_POSTGRES_URL")
    if url:
        yield "postgresql", url
    elif os.environ.get("CI") == "true":
        pytest.fail("CI must set MEDLORA_TEST_POSTGRES_URL (.ci/run starts PostgreSQL)")
    else:
        pytest.skip("no PostgreSQL server: set MEDLORA_TEST_POSTGRES_URL=postgresql://user@127.0.0.1/db")


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["journal", "postgresql"])
def test_two_workers_share_one_study(backend, tmp_path, model_cache, small_csv):
    url = dict(storages(tmp_path)).get(backend)
    if url is None:
        pytest.skip(f"no {backend} storage here")
    name = f"workers_{backend}_{uuid.uuid4().hex[:8]}"  # a fresh study in a shared server
    overrides = isolated_overrides(tmp_path, model_cache, small_csv) + [
        "study=tiny", f"study.name={name}", f"study.storage={url}", f"study.n_trials={N_TRIALS}",
        "study.search_space.train.batch_size.choices=[1,2]", "study.pruner.name=none"]
    study_cfg = to_study_config(compose(overrides))
    workers = []
    try:
        # the data split and the memory calibration are made once, before the workers race
        workers.append(subprocess.Popen([sys.executable, "-m", "medlora.cli", "sweep", *overrides],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        deadline = time.monotonic() + 120
        while not (study_cfg.dir / "memory_model.json").exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(2)
        workers.append(subprocess.Popen([sys.executable, "-m", "medlora.cli", "sweep", *overrides],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        for worker in workers:
            _, err = worker.communicate(timeout=900)
            assert worker.returncode == 0, err[-3000:]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.communicate()

    trials = existing_study(study_cfg).get_trials()
    assert [t.number for t in trials] == list(range(len(trials)))
    finished = [t for t in trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    assert len(finished) == len(trials) == N_TRIALS

    cfg = load_run_config(overrides)
    tracking.connect(cfg.paths)
    client = MlflowClient()
    exp = client.get_experiment_by_name(name)
    runs = client.search_runs([exp.experiment_id])
    children = sorted(int(r.data.tags["trial_number"]) for r in runs if "trial_number" in r.data.tags)
    assert children == [t.number for t in trials]
    assert all(r.info.status != "RUNNING" for r in runs)
