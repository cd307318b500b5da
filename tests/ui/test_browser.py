"""The MLflow UI as a person sees it, in headless Chromium: a tiny study, two promotes, `medlora ui`, three pages.

Skipped where no Chromium is installed (Debian: `apt-get install chromium`). With MEDLORA_UI_SCREENSHOTS=<folder>
it also saves what it rendered there as PNGs.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from chromium import Browser, find_chromium
from conftest import isolated_overrides
from mlflow.tracking import MlflowClient
from uiproc import free_port, start_ui

from medlora import tracking
from medlora.cli import main
from medlora.config import load_run_config
from medlora.study import search

pytestmark = [pytest.mark.skipif(find_chromium() is None, reason="no Chromium (apt-get install chromium)"),
              pytest.mark.slow]
SHOTS = os.environ.get("MEDLORA_UI_SCREENSHOTS")
NAME = "medlora-tiny_random"


@pytest.fixture(scope="module")
def ui(tmp_path_factory, model_cache, small_csv):
    """A tiny study promoted twice, served by `medlora ui`: (base url, study link, MLflow client, overrides)."""
    root = tmp_path_factory.mktemp("ui")
    overrides = isolated_overrides(root, model_cache, small_csv) + ["study=tiny"]
    with pytest.MonkeyPatch.context() as mp:  # the space untrimmed, so batch 64 shows as an infeasible trial
        mp.setattr(search, "fitting_space", lambda study_cfg, *args: study_cfg)
        assert main(["sweep", *overrides]) == 0
    assert main(["promote", *overrides]) == 0
    assert main(["promote", *overrides]) == 0
    tracking.connect(load_run_config(overrides).paths)
    port = free_port()
    proc, lines = start_ui(root, port, *overrides)
    link = next(line.strip() for line in lines if "viewStateShareKey" in line)
    yield f"http://127.0.0.1:{port}", link, MlflowClient(), overrides
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def browser():
    with Browser(width=2400, height=1000) as b:  # wide: the runs table renders only the columns in view
        yield b


def shot(browser: Browser, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        browser.click('[aria-label="Close"]')  # the MLflow Assistant panel, opened on a first visit
        browser.screenshot(Path(SHOTS) / name)


def runs_of(client: MlflowClient) -> dict[str, object]:
    experiment = client.get_experiment_by_name("tiny")
    return {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}


def test_the_link_lands_on_the_trials_with_outcome_params_and_val_loss(ui, browser):
    base, link, client, _ = ui
    assert "workflowType=machine_learning" in link
    browser.goto(link)
    assert browser.wait_for_text("tiny/trial-000", "best trial", "champion v2", timeout=90), browser.text()[:3000]
    text = browser.text()
    assert "Model training" in text and "Model registry" in text  # the training view, not GenAI's traces
    for column in ("outcome", "role", "registry", "best_val_loss", "val_loss", "train.batch_size",
                   "train.learning_rate", "train.iters", "lora.num_layers", "predicted_peak_gb", "peak_memory_gb"):
        assert column in text, column
    for outcome in ("complete", "pruned", "infeasible"):  # the tiny study has each (batch 64 never fits)
        assert outcome in text, outcome
    runs = runs_of(client)
    assert sorted(name for name in runs if "/trial-" in name) == [f"tiny/trial-{n:03d}" for n in range(6)]
    assert text.index("best trial") < text.index("infeasible")  # best validation loss first
    shot(browser, "study-runs.png")


def test_the_study_run_describes_the_study_and_links_the_champion(ui, browser):
    base, _, client, _ = ui
    parent = runs_of(client)["tiny/study"]
    browser.goto(f"{base}/#/experiments/{parent.info.experiment_id}/runs/{parent.info.run_id}"
                 "?workflowType=machine_learning")
    assert browser.wait_for_text("Best trial:", timeout=60), browser.text()[:2000]
    browser.click_text("Show more")
    assert browser.wait_for_text("champion v2", "memory cap 0.5 GB", "infeasible")
    hrefs = browser.eval("Array.from(document.querySelectorAll('a')).map(a => a.getAttribute('href'))")
    assert f"#/models/{NAME}/versions/2" in hrefs
    shot(browser, "study-run.png")


def test_a_trial_page_shows_every_sample_answer_in_full(ui, browser):
    base, _, client, _ = ui
    best = next(r for r in runs_of(client).values() if r.data.tags.get("role") == "best trial")
    path = client.download_artifacts(best.info.run_id, "samples.json")
    table = json.loads(Path(path).read_text())
    last_answer = max(table["data"], key=lambda row: (row[0], len(row[2])))[2]  # the last evaluation's longest
    assert len(last_answer) > 30  # longer than what fits in a column of the samples.json table
    browser.goto(f"{base}/#/experiments/{best.info.experiment_id}/runs/{best.info.run_id}/artifacts/samples.html"
                 "?workflowType=machine_learning")
    assert browser.wait_for_frames_text("Iteration 0 (the base model)", last_answer.strip(), timeout=60), \
        browser.frames_text()[-2000:]
    page = browser.frames_text()
    assert "Iteration 0 (the base model)" in page and last_answer.strip() in page  # whole, not cut with "..."
    shot(browser, "trial-samples.png")


def test_the_registry_version_shows_alias_study_trial_and_params_readably(ui, browser):
    base, _, client, _ = ui
    browser.goto(f"{base}/#/models/{NAME}/versions/2?workflowType=machine_learning")
    assert browser.wait_for_text("champion", "Source Run", timeout=60), browser.text()[:2000]
    text = browser.text()
    version = client.get_model_version(NAME, "2")
    assert version.tags["run"].startswith("tiny/trial-") and version.tags["run"] in text  # which study, which trial
    for key in ("study", "trial", "train.batch_size", "train.learning_rate", "lora.num_layers"):
        assert key in version.tags and key in text, key
    assert "overrides" not in version.tags and "[" not in version.tags.get("params", "")
    n_parameters = int(version.tags["base_model_parameters"])
    assert f"A {n_parameters / 1e6:.3g}M-parameter model" in text  # the card counts the real model
    shot(browser, "registry-version.png")


def test_ui_on_a_shared_server_starts_nothing_and_never_prints_its_password(ui, capsys):
    base, link, _, overrides = ui
    port = base.rsplit(":", 1)[1]
    assert main(["ui", f"paths.mlflow_server=http://medlora:s3cret@127.0.0.1:{port}", *overrides]) == 0
    out = capsys.readouterr().out
    assert link.replace(base, f"http://127.0.0.1:{port}") in out  # the same study link, through that server
    assert "s3cret" not in out and "Ctrl-C" not in out
