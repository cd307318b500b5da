"""A database password given on the command line is used, and never stored, logged or printed.

A tiny study runs on PostgreSQL with the URL as the README writes it (``postgresql://user:pw@host/db``,
psycopg 3); then promote, report, a rerun from best.yaml, `--cfg` and an unreachable-storage error.
Every file under the run's folders (the MLflow sqlite store and its artifacts, the study outputs),
everything printed, and everything Optuna stored are searched for the password.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from urllib.parse import urlsplit

import pytest
from conftest import isolated_overrides

from medlora.config import compose, to_study_config
from medlora.study.storage import existing_study

URL = os.environ.get("MEDLORA_TEST_POSTGRES_URL")


def medlora(*argv, expect=0) -> str:
    done = subprocess.run([sys.executable, "-m", "medlora", *argv], capture_output=True, text=True, timeout=600)
    assert done.returncode == expect, done.stderr[-3000:]
    return done.stdout + done.stderr


@pytest.mark.slow
@pytest.mark.skipif(not URL and os.environ.get("CI") != "true", reason="no PostgreSQL: set MEDLORA_TEST_POSTGRES_URL")
def test_the_password_is_used_but_found_nowhere(tmp_path, model_cache, small_csv):
    assert URL, "CI must set MEDLORA_TEST_POSTGRES_URL (.ci/run starts PostgreSQL)"
    password = urlsplit(URL).password
    assert password and len(password) >= 8, "the test needs a distinctive password in MEDLORA_TEST_POSTGRES_URL"
    name = f"secrets_{uuid.uuid4().hex[:8]}"
    overrides = isolated_overrides(tmp_path, model_cache, small_csv) + [
        "study=tiny", f"study.name={name}", f"study.storage={URL}", "study.n_trials=2",
        "study.search_space.train.batch_size.choices=[1,2]", "study.pruner.name=none"]
    printed = [
        medlora("sweep", *overrides),
        medlora("report", *overrides),
        medlora("promote", *overrides),
        medlora("train", "--from", str(tmp_path / "experiments" / name / "best.yaml"), *overrides),
        medlora("sweep", *overrides, "--cfg"),
        medlora("sweep", *overrides, "study.search_space.train.batch_size.choices=[1]", expect=2),
        medlora("sweep", *overrides, f"study.storage={URL.replace('127.0.0.1:5432', '127.0.0.1:9')}", expect=2),
    ]
    assert "***" in printed[4]  # --cfg shows the URL, masked

    leaks = [str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")
             if p.is_file() and password.encode() in p.read_bytes()]
    assert not leaks, f"the password is stored in {leaks}"
    assert not [i for i, text in enumerate(printed) if password in text], "the password was printed"
    study = existing_study(to_study_config(compose(overrides)))
    stored = json.dumps([study.user_attrs, *[(t.user_attrs, t.system_attrs) for t in study.get_trials()]],
                        default=str)
    assert password not in stored, "the password is stored in the Optuna study"
    assert len(study.get_trials()) == 2
