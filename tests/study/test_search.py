"""The Optuna study on the tiny model: memory cap, constraints, pruning, resume, outputs, promotion, ask."""

from __future__ import annotations

import math

import optuna
import pandas as pd
import pytest
from conftest import isolated_overrides
from mlflow.tracking import MlflowClient

from medlora import tracking
from medlora.config.study_schema import PrunerConfig
from medlora.study import objective, storage
from medlora.study import search as study
from medlora.training import memory
from medlora.cli import main
from medlora.config import compose, load_run_config, to_study_config
from medlora.study.report import best_trial, trial_state
from medlora.answers.safety import DISCLAIMER, MESSAGES

STUDY = ["study=tiny"]


def run_sweep(overrides):
    composed = compose(overrides)
    study_cfg = to_study_config(composed)
    return study.run_study(study_cfg, load_run_config(overrides), overrides), study_cfg


@pytest.fixture(scope="module")
def swept(tmp_path_factory, model_cache, small_csv):
    """One 6-trial tiny study; records which configs reached the trainer."""
    overrides = isolated_overrides(tmp_path_factory.mktemp("study"), model_cache, small_csv) + STUDY
    trained_batch_sizes = []
    real_train = objective.train

    def recording_train(cfg, **kwargs):
        trained_batch_sizes.append(cfg.train.batch_size)
        return real_train(cfg, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(objective, "train", recording_train)
        # the space untrimmed (batch 64 kept), so the safety net for what the trimming cannot see (a searched
        # max_seq_length, say) is exercised: tests/study/test_fidelity.py checks the trimming itself
        mp.setattr(study, "fitting_space", lambda study_cfg, *args: study_cfg)
        result, study_cfg = run_sweep(overrides)
    return result, study_cfg, overrides, trained_batch_sizes


def test_study_runs_the_requested_trials_and_records_constraints(swept):
    result, study_cfg, _, _ = swept
    trials = result.get_trials()
    assert len([t for t in trials if t.state.is_finished()]) == study_cfg.n_trials
    for t in trials:
        assert "memory_gb" in t.constraints
        assert t.user_attrs["predicted_peak_gb"] > 0
    completes = [t for t in trials if trial_state(t) == "COMPLETE"]
    assert completes
    for t in completes:
        assert t.constraints["memory_gb"] == pytest.approx(t.user_attrs["measured_peak_gb"] - study_cfg.memory_cap_gb)
        assert t.user_attrs["measured_peak_gb"] <= study_cfg.memory_cap_gb


def test_configs_predicted_over_the_cap_never_reach_the_trainer(swept):
    result, study_cfg, _, trained = swept
    infeasible = [t for t in result.get_trials() if trial_state(t) == "INFEASIBLE"]
    assert infeasible, "the tiny search space includes batch 64, which the 0.5 GB cap rules out"
    for t in infeasible:
        assert t.params["train.batch_size"] == 64
        assert t.constraints["memory_gb"] > 0
        assert "not trained" in t.user_attrs["reason"]
    assert 64 not in trained
    assert len(trained) == len(result.get_trials()) - len(infeasible)


def test_mlflow_has_a_parent_run_with_one_child_per_trial(swept):
    result, study_cfg, overrides, _ = swept
    cfg = load_run_config(overrides)
    tracking.connect(cfg.paths)
    client = MlflowClient()
    exp = client.get_experiment_by_name(study_cfg.name)
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("role") == "study"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert sorted(int(r.data.tags["trial_number"]) for r in children) == [t.number for t in result.get_trials()]
    infeasible = [r for r in children if r.data.tags.get("trial_state") == "INFEASIBLE"]
    assert infeasible and all("predicted_peak_gb" in r.data.metrics for r in infeasible)
    parent_files = {a.path for a in client.list_artifacts(parents[0].info.run_id)}
    assert {"trials.csv", "figures", "best.yaml"} <= parent_files


def test_runs_say_which_study_their_outcome_and_the_best_trial(swept):
    """Names carry the study; status and the `outcome` tag tell complete / pruned / infeasible apart."""
    import json

    result, study_cfg, overrides, _ = swept
    tracking.connect(load_run_config(overrides).paths)
    client = MlflowClient()
    exp = client.get_experiment_by_name(study_cfg.name)
    runs = client.search_runs([exp.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("role") == "study"]
    children = {int(r.data.tags["trial_number"]): r for r in runs if r is not parent}
    assert parent.info.run_name == "tiny/study"
    expected = {"COMPLETE": ("FINISHED", "complete"), "PRUNED": ("KILLED", "pruned"),
                "INFEASIBLE": ("KILLED", "infeasible"), "OVER_CAP": ("KILLED", "over cap")}
    best = best_trial(result)
    for trial in result.get_trials():
        run = children[trial.number]
        assert run.info.run_name == f"tiny/trial-{trial.number:03d}"
        assert (run.info.status, run.data.tags["outcome"]) == expected[trial_state(trial)]
        assert run.data.tags["role"] == ("best trial" if trial.number == best.number else "trial")
        for key in ("train.batch_size", "train.learning_rate", "train.iters", "lora.num_layers", "predicted_peak_gb"):
            assert key in run.data.params, key  # searched params and the memory prediction, trained or not
    outcomes = {trial_state(t) for t in result.get_trials()}
    assert {"COMPLETE", "PRUNED", "INFEASIBLE"} <= outcomes

    note = parent.data.tags["mlflow.note.content"]  # the parent run's description
    assert note.startswith(f"**Best trial:** [tiny/trial-{best.number:03d}](#/experiments/{exp.experiment_id}/runs/")
    n_complete = sum(trial_state(t) == "COMPLETE" for t in result.get_trials())
    assert f"**{len(children)} trials**: {n_complete} complete" in note and "memory cap 0.5 GB" in note
    assert note.count("| [tiny/trial-") == len(children)

    view = json.loads(exp.tags["mlflow.sharedViewState.medlora"])  # the saved runs view the link opens
    state = json.loads(view["state"])
    assert state["orderByKey"] == "metrics.`best_val_loss`" and state["orderByAsc"] is True
    assert state["columnOrder"][1:4] == ["tags.`outcome`", "tags.`role`", "tags.`registry`"]
    for key in ("train.batch_size", "train.learning_rate", "train.iters", "lora.num_layers"):
        assert f"params.`{key}`" in state["selectedColumns"]
    assert client.get_experiment("0").lifecycle_stage == "deleted"  # no empty "Default" experiment in the list


def test_outputs_and_report_regenerates_them_from_storage(swept, capsys):
    result, study_cfg, overrides, _ = swept
    frame = pd.read_csv(study_cfg.dir / "trials.csv")
    assert len(frame) == len(result.get_trials())
    for column in ("state", "value", "predicted_peak_gb", "measured_peak_gb", "trained_tokens", "seconds",
                   "train.batch_size", "train.learning_rate"):
        assert column in frame.columns
    figures = {"val_loss_curves.png", "optimization_history.png", "param_importances.png",
               "memory_predicted_vs_measured.png"}
    for name in figures:
        (study_cfg.dir / "figures" / name).unlink()
    (study_cfg.dir / "trials.csv").unlink()
    assert main(["report", *overrides]) == 0
    assert {p.name for p in (study_cfg.dir / "figures").iterdir()} == figures
    assert len(pd.read_csv(study_cfg.dir / "trials.csv")) == len(frame)


def test_best_yaml_reproduces_the_best_trial(swept):
    result, study_cfg, _, _ = swept
    import yaml

    best = best_trial(result)
    saved = yaml.safe_load((study_cfg.dir / "best.yaml").read_text())
    assert saved["trial"] == best.number
    cfg = load_run_config(saved["overrides"])
    for key, value in best.params.items():
        section, name = key.split(".")
        assert getattr(getattr(cfg, section), name) == pytest.approx(value)


def test_promote_moves_champion_keeps_previous_and_rolls_back_and_ask_answers(swept, capsys):
    _, _, overrides, _ = swept
    cfg = load_run_config(overrides)
    assert main(["promote", *overrides]) == 0
    assert main(["promote", *overrides]) == 0
    tracking.connect(cfg.paths)
    client = MlflowClient()
    name = "medlora-tiny_random"
    champion = client.get_model_version_by_alias(name, "champion")
    previous = client.get_model_version_by_alias(name, "previous")
    assert (int(champion.version), int(previous.version)) == (2, 1)
    assert champion.tags["base_model"] == "tiny_random" and "best_val_loss" in champion.tags
    # one readable tag per fact: the run name says which study and trial; no JSON overrides
    best = best_trial(swept[0])
    assert champion.tags["run"] == f"tiny/trial-{best.number:03d}" and champion.tags["study"] == "tiny"
    assert {k: champion.tags[k] for k in best.params} == {k: str(v) for k, v in best.params.items()}
    assert "overrides" not in champion.tags and "params" not in champion.tags
    card = champion.description  # the model card
    size = int(client.get_run(champion.run_id).data.params["model_parameters"])
    for part in ("# medlora-tiny_random, version 2", "## Training data", "CC BY 4.0", "## How it was chosen",
                 f"trial #{champion.tags['trial']}", "## Evaluation", "Not evaluated yet", "## Intended use",
                 "## Limits", f"({size:,} parameters)", f"A {size / 1e6:.3g}M-parameter model"):
        assert part in card, part
    assert "135M" not in card  # the tiny model is not SmolLM2
    assert client.download_artifacts(champion.run_id, "model_card.md")
    trial_run = client.get_run(champion.run_id)  # the champion marked where the runs are
    assert trial_run.data.tags["registry"] == "champion v2, previous v1"
    parent_note = client.get_run(trial_run.data.tags["mlflow.parentRunId"]).data.tags["mlflow.note.content"]
    assert "[champion v2](#/models/medlora-tiny_random/versions/2)" in parent_note

    assert main(["promote", "--rollback", *overrides]) == 0
    assert int(client.get_model_version_by_alias(name, "champion").version) == 1
    assert int(client.get_model_version_by_alias(name, "previous").version) == 2
    assert len(client.search_model_versions(f"name='{name}'")) == 2  # nothing deleted
    assert client.get_run(champion.run_id).data.tags["registry"] == "champion v1, previous v2"

    capsys.readouterr()
    from medlora.data import splits as data

    train_rows = data.load_split(data.prepare_from_config(cfg.data, cfg.paths.processed), "train")
    question = train_rows[0]["messages"][-2]["content"]  # a disease the retrieval index knows
    assert main(["ask", question, *overrides]) == 0
    out = capsys.readouterr().out
    assert "champion adapter v1" in out
    assert DISCLAIMER in out
    assert "Sources (related NIH pages):" in out and "https://" in out

    # evaluating the champion writes its table into the champion's model card
    assert main(["evaluate", *overrides, "evaluate.questions=3", "evaluate.rows=[adapter,retrieval]",
                 "generation.max_tokens=4"]) == 0
    card = client.get_model_version(name, "1").description
    assert "| adapter (champion v1) |" in card and "| retrieval |" in card and "Not evaluated yet" not in card


def test_interrupted_study_resumes_with_continued_numbering(tmp_path, model_cache, small_csv):
    overrides = isolated_overrides(tmp_path, model_cache, small_csv) + STUDY + [
        "study.n_trials=3", "study.search_space.train.batch_size.choices=[1,2]"]
    calls = {"n": 0}
    real_train = objective.train

    def interrupted_train(cfg, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_train(cfg, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(objective, "train", interrupted_train)
        with pytest.raises(KeyboardInterrupt):
            run_sweep(overrides)
    resumed, study_cfg = run_sweep(overrides)
    numbers = [t.number for t in resumed.get_trials()]
    assert numbers == list(range(len(numbers)))
    assert [t.state for t in resumed.get_trials()][:2] == [optuna.trial.TrialState.COMPLETE,
                                                           optuna.trial.TrialState.FAIL]
    assert len([t for t in resumed.get_trials() if t.state.is_finished() and t.state.name != "FAIL"]) == 3


def test_pruner_stops_losing_trials(tmp_path, model_cache, small_csv):
    overrides = isolated_overrides(tmp_path, model_cache, small_csv) + STUDY + [
        "study.n_trials=2", "study.pruner.name=threshold", "+study.pruner.upper=1.0",
        "study.search_space.train.batch_size.choices=[1,2]"]
    result, _ = run_sweep(overrides)
    for t in result.get_trials():
        assert trial_state(t) == "PRUNED"
        assert max(t.intermediate_values) < 11  # stopped at the first evaluation after warm-up, not at the end


def test_a_trial_over_the_cap_while_training_is_stopped(tmp_path, model_cache, small_csv, monkeypatch):
    overrides = isolated_overrides(tmp_path, model_cache, small_csv) + STUDY + [
        "study.n_trials=1", "study.memory_cap_gb=0.05", "study.search_space.train.batch_size.choices=[2]"]
    # Make the predictor believe everything fits, so that only the guard can stop the trial.
    monkeypatch.setattr(memory.MemoryModel, "predict_gb", lambda self, *a: 0.0)
    monkeypatch.setattr(study.memory, "load_or_calibrate",
                        lambda *a, **k: memory.MemoryModel(0.0, 0.0, 0.0, 0.0, "test"))
    result, study_cfg = run_sweep(overrides)
    (trial,) = result.get_trials()
    assert trial_state(trial) == "OVER_CAP"
    assert trial.constraints["memory_gb"] > 0
    assert trial.user_attrs["measured_peak_gb"] > study_cfg.memory_cap_gb
    assert not math.isnan(trial.constraints["memory_gb"])


def test_cap_smaller_than_the_model_is_a_user_error(tmp_path, model_cache, small_csv, capsys):
    overrides = isolated_overrides(tmp_path, model_cache, small_csv) + STUDY + ["study.memory_cap_gb=0.001"]
    assert main(["sweep", *overrides]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) >= 1 and "smaller than the model itself" in err[-1] and "fix:" in err[-1]


def test_pruning_callback_raises_when_the_pruner_says_so():
    study = optuna.create_study(pruner=optuna.pruners.ThresholdPruner(upper=2.5, n_warmup_steps=0))
    kept, dropped = study.ask(), study.ask()
    objective.PruningCallback(kept).on_val_loss_report({"iteration": 4, "val_loss": 2.0})  # under: goes on
    with pytest.raises(optuna.TrialPruned, match="iteration 4"):
        objective.PruningCallback(dropped).on_val_loss_report({"iteration": 4, "val_loss": 3.0})
    study.tell(kept, 2.0)
    assert study.trials[0].intermediate_values == {4: 2.0} and study.trials[1].intermediate_values == {4: 3.0}


def test_ask_answers_a_red_flag_with_triage_and_loads_no_model(monkeypatch, capsys, tmp_path):
    from medlora.answers import ask as answer

    monkeypatch.setattr(answer, "load_with_champion", lambda *a: pytest.fail("a model was loaded"))
    assert main(["ask", "I want to kill myself", f"paths.mlruns={tmp_path}"]) == 0
    assert capsys.readouterr().out.strip() == MESSAGES["self_harm"]


def test_baseline_params_come_from_the_run_config_moved_into_the_space():
    overrides = ["train.batch_size=4", "train.learning_rate=2e-3", "lora.num_layers=7", "lora.rank=8"]
    composed = compose(overrides)
    params = study.baseline_params(to_study_config(composed), load_run_config(overrides))
    space = {s.key: s for s in to_study_config(composed).search_space}
    assert params["train.batch_size"] == 4 and params["lora.rank"] == 8 and params["train.lr_schedule"] == "constant"
    assert params["train.learning_rate"] == space["train.learning_rate"].high  # 2e-3 is outside the space: clipped
    assert params["lora.num_layers"] in (6, 8)  # snapped to the step-2 grid


def test_two_promotes_at_once_leave_one_champion_and_the_previous(swept):
    import subprocess
    import sys

    _, _, overrides, _ = swept
    cfg = load_run_config(overrides)
    tracking.connect(cfg.paths)
    client = MlflowClient()
    name = "medlora-tiny_random"
    before = len(client.search_model_versions(f"name='{name}'"))
    workers = [subprocess.Popen([sys.executable, "-m", "medlora.cli", "promote", *overrides],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for w in workers:
        _, err = w.communicate(timeout=300)
        assert w.returncode == 0, err[-2000:]
    versions = sorted(int(v.version) for v in client.search_model_versions(f"name='{name}'"))
    assert versions == list(range(1, before + 3))  # both registered, nothing deleted
    champion = int(client.get_model_version_by_alias(name, "champion").version)
    previous = int(client.get_model_version_by_alias(name, "previous").version)
    assert {champion, previous} == {before + 1, before + 2}  # the later promote names the earlier 'previous'


def test_a_corrupt_adapter_is_refused_before_the_alias_moves(swept, capsys):
    from pathlib import Path
    from urllib.parse import urlparse

    result, _, overrides, _ = swept
    cfg = load_run_config(overrides)
    tracking.connect(cfg.paths)
    client = MlflowClient()
    name = "medlora-tiny_random"
    champion_before = client.get_model_version_by_alias(name, "champion").version
    run = client.get_run(best_trial(result).user_attrs["run_id"])
    weights = Path(urlparse(run.info.artifact_uri).path) / "adapters" / "best" / "adapters.safetensors"
    good = weights.read_bytes()
    try:
        weights.write_bytes(good[:40])  # truncated
        capsys.readouterr()
        assert main(["promote", *overrides]) == 2
        assert "missing or corrupt" in capsys.readouterr().err
        assert client.get_model_version_by_alias(name, "champion").version == champion_before
    finally:
        weights.write_bytes(good)


@pytest.mark.parametrize("n_min_trials, pruned_after_one", [(1, True), (2, False)])
def test_median_pruner_waits_for_n_min_trials_at_a_step(n_min_trials, pruned_after_one):
    import optuna

    pruner = storage.make_pruner(PrunerConfig(name="median", n_startup_trials=0, n_warmup_steps=0,
                                              n_min_trials=n_min_trials))
    s = optuna.create_study(pruner=pruner)

    def finish(value):
        trial = s.ask()
        trial.report(value, step=59)
        s.tell(trial, value)

    def worse_trial_is_pruned():
        trial = s.ask()
        trial.report(2.0, step=59)
        return trial.should_prune()

    finish(1.0)
    assert worse_trial_is_pruned() == pruned_after_one  # one long trial alone is "the median"
    finish(1.0)
    assert worse_trial_is_pruned()  # with two completed trials at the step, both settings prune
