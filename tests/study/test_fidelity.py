"""Multi-fidelity search (successive halving on examples seen), the memory-bounded space, and the verdict."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import optuna
import pytest
from conftest import isolated_overrides
from mlflow.tracking import MlflowClient

from medlora.config import compose, load_run_config, to_study_config
from medlora.errors import UserError
from medlora.study import answer_check
from medlora.study.report import best_trial
from medlora.registry.promote import promote
from medlora.study.storage import existing_study, load_study
from medlora.study.objective import PruningCallback
from medlora.training import memory
from medlora.training.heldout import paired_bootstrap
from medlora.training.run import learning_rate_schedule

ASHA = ["study=tiny", "study.n_trials=9", "study.enqueue_baseline=true", "study.sampler.seed=1",
        "study.fidelity={max_examples: 36, reduction_factor: 3, rungs: 3, first_bracket: 3}", "study.pruner.name=asha",
        "study.search_space.train.iters=null", "study.search_space.train.batch_size.choices=[1,2,4]",
        "study.memory_cap_gb=0.2",
        "+study.search_space.train.lr_schedule={type: categorical, choices: [constant, cosine]}",
        "study.search_space.lora.num_layers.high=2", "evaluate.questions=12",
        "study.answers={questions: 4, set: split, max_tokens: 8, test_questions: 3}", "study.objective=similarity"]


@pytest.fixture(scope="module")
def asha_study(tmp_path_factory, model_cache, small_csv):
    """The sweep as a user runs it (its own process: the memory calibration sees only its own allocations)."""
    overrides = isolated_overrides(tmp_path_factory.mktemp("asha"), model_cache, small_csv) + ASHA
    done = subprocess.run([sys.executable, "-m", "medlora.cli", "sweep", *overrides], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "batch sizes [4] do not fit the 0.2 GB cap" in done.stderr
    study_cfg = to_study_config(compose(overrides))
    return existing_study(study_cfg), study_cfg


def test_trials_meet_at_rungs_of_examples_and_only_the_best_go_on(asha_study):
    study, cfg = asha_study
    trials = study.get_trials()
    assert len(trials) == 9
    for t in trials:
        batch = t.params["train.batch_size"]
        assert set(t.intermediate_values) <= set(range(4, 37, 4))  # every rung multiple, whatever the batch size
        assert t.user_attrs["overrides"][-2:] == [f"train.iters={36 // batch}", f"train.steps_per_eval={4 // batch}"]
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned and complete
    assert all(max(t.intermediate_values) == 36 for t in complete)  # a trial at the top rung completes
    assert all(max(t.intermediate_values) < 36 for t in pruned)


def test_the_first_bracket_is_screened_together_and_its_best_configuration_trained_again(asha_study):
    study, cfg = asha_study
    trials = study.get_trials()
    screened = trials[1:4]  # trial 0 is the baseline
    assert all(t.user_attrs.get("bracket") == "screen" and t.state == optuna.trial.TrialState.PRUNED
               and max(t.intermediate_values) == 4 and t.user_attrs["reason"].startswith("screened") for t in screened)
    best = min(screened, key=lambda t: t.intermediate_values[4])
    again = trials[4]
    assert again.user_attrs["promoted_from"] == best.number and again.params == best.params
    assert again.intermediate_values[4] == pytest.approx(best.intermediate_values[4], rel=1e-5)  # the same seed
    assert max(again.intermediate_values) > 4  # it went past the first rung
    assert study.user_attrs["first_bracket_promoted"] == [best.number]
    assert all("bracket" not in t.user_attrs for t in trials[5:])
    search = json.loads((cfg.dir / "verdict.json").read_text())["search"]
    assert (search["configurations"], search["trials"], search["screened"]) == (8, 9, 3)  # trial 4 is trial 1, 2 or 3
    rows = list(csv.DictReader((cfg.dir / "trials.csv").open()))
    assert [r["bracket"] for r in rows[:5]] == ["", "screen", "screen", "screen", "promoted"]
    assert float(rows[4]["promoted_from"]) == best.number


def test_no_trial_number_is_spent_on_a_batch_over_the_cap(asha_study):
    study, cfg = asha_study
    over = [t for t in study.get_trials() if t.user_attrs.get("state") == "INFEASIBLE"]
    drawn = [t.params["train.batch_size"] for t in study.get_trials()]
    assert 4 not in drawn and not over  # batch 4 does not fit 0.2 GB with even one LoRA layer: never proposed


def test_the_verdict_compares_champion_and_baseline_on_questions_neither_was_chosen_on(asha_study):
    study, cfg = asha_study
    verdict = json.loads((cfg.dir / "verdict.json").read_text())
    assert verdict["baseline_trial"] == 0
    if verdict["champion_trial"] == 0:
        assert verdict["sets"] == {} and "no better configuration" in verdict["summary"]
        return
    # which trial is champion depends on how the tiny model's 4 answers fall (objective similarity)
    for name, questions in (("fresh validation", 32), ("test", 12)):  # 32 valid rows after the ranking subset
        v = verdict["sets"][name]
        assert v["questions"] == questions
        assert v["ci95"][0] <= v["difference"] <= v["ci95"][1]
        assert v["difference"] == pytest.approx(v["champion_loss"] - v["baseline_loss"], abs=1e-9)
    assert verdict["answers"]["test answers"]["questions"] == 3  # answered by both adapters at the verdict
    assert verdict["answers"]["study questions"]["versus"] == "baseline"
    assert (cfg.dir / "verdict.md").read_text().startswith("# Verdict: ")


def test_complete_trials_answer_the_study_questions_and_are_compared_with_the_base_model(asha_study):
    study, cfg = asha_study
    base = study.user_attrs[answer_check.BASE_KEY]
    assert base["signature"].startswith("split:4:8:") and len(base["similarity"]) == 4
    for t in study.get_trials():
        scores = t.user_attrs.get("answer_scores")
        if t.state != optuna.trial.TrialState.COMPLETE:
            assert scores is None  # only a trial that reached the top rung is asked
            continue
        assert scores["signature"] == base["signature"] and len(scores["words"]) == 4
        assert t.user_attrs["answer_similarity"] == pytest.approx(np.mean(scores["similarity"]), abs=1e-4)
        diff = np.mean(scores["similarity"]) - np.mean(base["similarity"])
        assert t.user_attrs["answer_similarity_vs_base"] == pytest.approx(diff, abs=1e-3)
    verdict = json.loads((cfg.dir / "verdict.json").read_text())
    assert verdict["objective"] == "similarity" and "study questions vs base model" in verdict["answers"]
    assert "untuned model's" in verdict["summary"]
    trials = (cfg.dir / "trials.csv").read_text().splitlines()
    assert "answer_similarity" in trials[0].split(",")
    store = f"sqlite:///{(cfg.dir.parent.parent / 'mlruns').resolve() / 'mlflow.db'}"
    parent = MlflowClient(tracking_uri=store).get_run(study.user_attrs["mlflow_parent_run_id"])
    vs_base = verdict["answers"]["study questions vs base model"]
    assert parent.data.metrics["verdict_study_questions_vs_base_model_similarity_difference"] == pytest.approx(
        vs_base["difference"], abs=1e-4)


def _scored_trial(similarity: list[float], loss: float, signature: str = "consumer:3:8", memory: float = -1.0):
    return optuna.trial.create_trial(
        params={"x": 1.0}, distributions={"x": optuna.distributions.FloatDistribution(0, 2)}, value=loss,
        user_attrs={"answer_scores": {"similarity": similarity, "repetition": [0.0] * 3, "words": [9.0] * 3,
                                      "signature": signature}, "answer_similarity": float(np.mean(similarity)),
                    "run_id": "0123abcd"},
        system_attrs={"constraints": [memory]})


def test_similarity_ranks_the_scored_trials_and_loss_ranks_them_all():
    study = optuna.create_study()
    study.set_user_attr(answer_check.BASE_KEY, {"similarity": [0.5] * 3, "repetition": [0.0] * 3,
                                                "signature": "consumer:3:8"})
    for trial in (_scored_trial([0.6, 0.6, 0.6], 2.0), _scored_trial([0.7, 0.7, 0.7], 2.5),
                  _scored_trial([0.9, 0.9, 0.9], 3.0, memory=0.5),  # over the memory cap
                  _scored_trial([0.95, 0.95, 0.95], 3.0, signature="consumer:5:8"),  # other questions
                  optuna.trial.create_trial(params={"x": 1.0}, value=1.5,
                                            distributions={"x": optuna.distributions.FloatDistribution(0, 2)})):
        study.add_trial(trial)
    assert best_trial(study, "similarity").number == 1
    assert best_trial(study, "loss").number == 4


def test_an_adapter_whose_answers_are_worse_than_the_base_models_is_not_promoted():
    study = optuna.create_study()
    study.set_user_attr(answer_check.BASE_KEY, {"similarity": [0.60, 0.70, 0.65], "repetition": [0.0] * 3,
                                                "signature": "consumer:3:8"})
    study.add_trial(_scored_trial([0.50, 0.61, 0.55], 2.0))
    study.add_trial(_scored_trial([0.62, 0.69, 0.66], 2.1))
    worse, fine = study.get_trials()
    assert "less similar to the reference answers than the untuned model's: -0.097" in answer_check.worse_than_base(
        study, worse)
    assert answer_check.worse_than_base(study, fine) is None


def test_answers_decoded_otherwise_are_not_compared(tiny_overrides):
    cfg = load_run_config(tiny_overrides)
    records = [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}]
    asked = [answer_check.from_records(records, "consumer", 8, cfg.generation.model_copy(update=change))
             for change in ({}, {"no_repeat_ngram": 0}, {"end_probability": 0.0})]
    assert len({a.signature for a in asked}) == 3
    study = optuna.create_study()  # a study resumed after generation.* changed: the base model answers again
    study.set_user_attr(answer_check.BASE_KEY, {"similarity": [0.9], "signature": asked[1].signature})
    assert answer_check.versus({"similarity": [0.1], "signature": asked[0].signature},
                               study.user_attrs[answer_check.BASE_KEY]) is None


def test_promote_refuses_a_champion_that_answers_worse_than_the_base_model(tiny_overrides):
    overrides = tiny_overrides + ["study=tiny", "study.objective=similarity",
                                  "study.answers={questions: 3, set: consumer, max_tokens: 8, test_questions: 0}"]
    study_cfg, run_cfg = to_study_config(compose(overrides)), load_run_config(overrides)
    study = load_study(study_cfg)
    study.set_user_attr(answer_check.BASE_KEY, {"similarity": [0.60, 0.70, 0.65], "repetition": [0.0] * 3,
                                                "signature": "consumer:3:8"})
    study.add_trial(_scored_trial([0.50, 0.61, 0.55], 2.0))
    with pytest.raises(UserError, match=r"not promoted: trial 0's answers .* less similar .* untuned model's"):
        promote(study_cfg, run_cfg)
    assert not (study_cfg.dir.parent.parent / "mlruns").exists()  # refused before anything was registered


def test_a_similarity_objective_needs_the_answer_check(tiny_overrides):
    with pytest.raises(UserError, match="study.objective=similarity ranks trials by their answers"):
        to_study_config(compose(tiny_overrides + ["study=tiny", "study.objective=similarity"]))


def test_a_search_space_that_spends_the_fidelity_twice_is_refused(tiny_overrides):
    with pytest.raises(UserError, match="study.fidelity sets each trial's train.iters"):
        to_study_config(compose(tiny_overrides + ["study=tiny", "study.pruner.name=asha",
                                                  "study.fidelity={max_examples: 36, reduction_factor: 3, rungs: 3}"]))
    with pytest.raises(UserError, match="needs study.fidelity"):
        to_study_config(compose(tiny_overrides + ["study=tiny", "study.pruner.name=asha"]))
    with pytest.raises(UserError, match=r"choices \[8\] do not divide the first rung"):
        to_study_config(compose(tiny_overrides + ASHA[:5] + ["study.search_space.train.iters=null",
                                                             "study.search_space.train.batch_size.choices=[1,8]"]))


def test_the_pruner_is_not_asked_at_the_top_rung():
    study = optuna.create_study(pruner=optuna.pruners.ThresholdPruner(upper=0.0))
    trial = study.ask()
    callback = PruningCallback(trial, examples_per_step=4, last_rung=36)
    callback.on_val_loss_report({"iteration": 8, "val_loss": 5.0})  # (8 + 1) x 4 = 36: reported, not pruned
    assert trial.storage.get_trial(trial._trial_id).intermediate_values == {36: 5.0}
    with pytest.raises(optuna.TrialPruned, match="up to 32 examples"):
        callback.on_val_loss_report({"iteration": 7, "val_loss": 5.0})


def test_a_rung_sees_the_best_loss_so_far_and_a_diverged_trial_is_stopped():
    study = optuna.create_study(pruner=optuna.pruners.ThresholdPruner(upper=3.0))
    trial = study.ask()
    callback = PruningCallback(trial, examples_per_step=4, last_rung=64)
    for iteration, loss in ((3, 2.5), (7, 2.9)):  # worse at 32 examples than at 16: the adapter kept is the 16's
        callback.on_val_loss_report({"iteration": iteration, "val_loss": loss})
    assert trial.storage.get_trial(trial._trial_id).intermediate_values == {16: 2.5, 32: 2.5}
    with pytest.raises(optuna.TrialPruned, match="best val loss nan up to 48 examples"):
        callback.on_val_loss_report({"iteration": 11, "val_loss": float("nan")})


def test_layers_are_bounded_by_what_fits_with_the_batch():
    model = memory.MemoryModel(base_gb=0.5, per_token_gb=0.0, per_token_layer_gb=0.001, eval_gb=0.1, key="k")
    # batch 1 x 100 tokens: 0.5 + 0.1 * layers (x1.05) <= 1.0 -> 4 layers; batch 2: 2 layers; batch 8: none fit
    assert model.max_layers(1, 100, 1.0, low=2, high=16, step=2) == 4
    assert model.max_layers(2, 100, 1.0, low=2, high=16, step=2) == 2
    assert model.max_layers(8, 100, 1.0, low=2, high=16, step=2) == 2  # the low end: the trial is then skipped


def test_cosine_schedule_warms_up_then_decays_to_a_tenth():
    cfg = load_run_config(["train.lr_schedule=cosine", "train.iters=100", "train.warmup=0.1",
                           "train.learning_rate=1e-3"]).train
    schedule = learning_rate_schedule(cfg)
    values = [float(schedule(step)) for step in (0, 10, 55, 100)]
    assert values[0] == pytest.approx(1e-5) and values[1] == pytest.approx(1e-3)
    assert 1e-4 < values[2] < 1e-3 and values[3] == pytest.approx(1e-4, rel=0.01)
    assert learning_rate_schedule(load_run_config([]).train) == 2e-4  # the default: constant


def test_paired_bootstrap_brackets_the_mean_and_sees_a_real_difference():
    rng = np.random.default_rng(0)
    a = rng.normal(2.0, 0.3, 200)
    same = paired_bootstrap(a, a + rng.normal(0, 0.01, 200))
    shifted = paired_bootstrap(a - 0.1, a)
    assert same[1] < 0 < same[2] or abs(same[0]) < 0.01
    assert shifted[0] == pytest.approx(-0.1) and shifted[2] < 0
