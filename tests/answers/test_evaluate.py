"""`medlora evaluate` on the tiny model: every row scored, recorded in MLflow and experiments/, bad input refused."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd

import pytest
from conftest import isolated_overrides
from mlflow.tracking import MlflowClient

from medlora import tracking
from medlora.config import load_run_config
from medlora.errors import UserError
from medlora.answers.evaluate import evaluate
from medlora.data.questions import test_sample as sample_questions  # not a test: pytest would collect it
from medlora.answers.metrics import repeats_a_4gram, rouge_l
from medlora.data.consumer import read_set
from medlora.training.run import train


def test_repetition_is_a_repeated_word_4gram():
    assert repeats_a_4gram("the eye is the organ. The eye is the organ of sight")
    assert not repeats_a_4gram("the eye is the organ of sight, and the eye sees")
    assert not repeats_a_4gram("")


def test_rouge_l_scores_overlap():
    same, other = rouge_l(["glaucoma damages the optic nerve", "cats purr"],
                          ["glaucoma damages the optic nerve", "glaucoma damages the optic nerve"])
    assert same == pytest.approx(1.0) and other == 0.0


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, model_cache, small_csv):
    root = tmp_path_factory.mktemp("eval")
    overrides = isolated_overrides(root, model_cache, small_csv)
    run = train(load_run_config(overrides + ["run_name=to-evaluate"]))
    cfg = load_run_config(overrides + [f"evaluate.adapter={run.run_id}", "evaluate.questions=5",
                                       "generation.max_tokens=6", "run_name=evaluation"])
    table, out, md = evaluate(cfg)
    return cfg, run, table, out, md


def test_every_row_is_scored(evaluated):
    cfg, run, table, out, md = evaluated
    assert [t["row"] for t in table] == ["base", "adapter", "retrieval", "rag"]
    for t in table:
        assert 0 <= t["rougeL"] <= 1 and -1 <= t["similarity"] <= 1 and 0 <= t["repetition_rate"] <= 1
    answers = pd.read_csv(out / "answers.csv", keep_default_na=False)
    for t in table:  # the mean length is that of the answers written out
        assert t["mean_words"] == pytest.approx(np.mean([len(re.findall(r"\w+", a)) for a in answers[t["row"]]]))
    losses = {t["row"]: t["test_loss"] for t in table}
    assert math.isfinite(losses["base"]) and math.isfinite(losses["adapter"])
    assert losses["base"] != losses["adapter"]  # the adapter changes the model
    assert math.isnan(losses["retrieval"]) and math.isnan(losses["rag"])
    retrieval = next(t for t in table if t["row"] == "retrieval")
    assert retrieval["mean_words"] > 10  # real NIH answers
    assert retrieval["similarity"] > max(t["similarity"] for t in table if t["row"] in ("base", "adapter"))
    assert f"adapter (run {run.run_id[:8]})" in md
    assert "LoRA updates x 0.7 (generation.adapter_strength)" in md.splitlines()[0]  # as they answer, said


def test_recorded_in_mlflow_and_experiments(evaluated):
    cfg, run, table, out, md = evaluated
    assert {p.name for p in out.iterdir()} == {"evaluation.csv", "evaluation.md", "answers.csv", "evaluation.png"}
    assert out.parent == cfg.paths.experiments / "evaluation"
    tracking.connect(cfg.paths)
    client = MlflowClient()
    record = client.get_run(out.name)
    assert record.info.status == "FINISHED" and record.data.tags["medlora.kind"] == "evaluation"
    assert record.data.metrics["adapter.rougeL"] == pytest.approx(table[1]["rougeL"])
    assert record.data.params["generation.max_tokens"] == "6"
    assert {a.path for a in client.list_artifacts(out.name)} >= {"evaluation.json", "answers.json",
                                                                 "evaluation.md", "evaluation.png"}


def test_an_unknown_adapter_is_refused_before_any_work(tmp_path, model_cache, small_csv):
    cfg = load_run_config(isolated_overrides(tmp_path, model_cache, small_csv)
                          + ["evaluate.adapter=no-such-thing", "evaluate.rows=[adapter]"])
    with pytest.raises(UserError, match="evaluate.adapter='no-such-thing'"):
        evaluate(cfg)
    assert not (tmp_path / "experiments" / "evaluation").exists()


def _consumer_overrides(root, model_cache, default_processed) -> list[str]:
    """The tiny model and outputs under ``root``, but the default data split: the consumer set is written for it."""
    keep = [o for o in isolated_overrides(root, model_cache, root / "unused.csv")
            if not o.startswith(("data.csv=", "paths.processed="))]
    return keep + [f"paths.processed={default_processed}", "evaluate.questions_set=consumer"]


def test_the_consumer_set_takes_the_place_of_the_test_sample(tmp_path, model_cache, default_processed):
    overrides = _consumer_overrides(tmp_path, model_cache, default_processed)
    test_half = read_set().query("half == 'test'")
    everything = sample_questions(load_run_config(overrides + ["evaluate.questions=1000"]))  # fewer than asked: all
    assert sorted(r["messages"][-2]["content"] for r in everything) == sorted(test_half["message"])
    some = sample_questions(load_run_config(overrides + ["evaluate.questions=7", "evaluate.seed=3"]))
    assert len(some) == 7 and some == sample_questions(load_run_config(overrides + ["evaluate.questions=7",
                                                                                "evaluate.seed=3"]))
    split = sample_questions(load_run_config(overrides + ["evaluate.questions_set=split", "evaluate.questions=7"]))
    assert not {r["messages"][-2]["content"] for r in split} & set(test_half["message"])


def test_evaluate_on_the_consumer_set_says_so(tmp_path, model_cache, default_processed):
    cfg = load_run_config(_consumer_overrides(tmp_path, model_cache, default_processed)
                          + ["evaluate.questions=4", "evaluate.rows=[base,retrieval]", "generation.max_tokens=6"])
    table, out, md = evaluate(cfg)
    assert [t["row"] for t in table] == ["base", "retrieval"] and md.startswith("Consumer set, test half")
    answers = pd.read_csv(out / "answers.csv", keep_default_na=False)
    messages = dict(zip(read_set()["id"], read_set()["message"]))
    assert len(answers) == 4 and all(i.startswith("t") for i in answers["consumer_id"])
    assert list(answers["question"]) == [messages[i] for i in answers["consumer_id"]]
    tracking.connect(cfg.paths)
    assert MlflowClient().get_run(out.name).data.params["evaluate.questions_set"] == "consumer"


def test_a_baseline_adapter_is_a_row_and_every_model_row_is_compared_with_intervals(tmp_path, model_cache, small_csv):
    overrides = isolated_overrides(tmp_path, model_cache, small_csv)
    first = train(load_run_config(overrides + ["run_name=first"]))
    second = train(load_run_config(overrides + ["run_name=second", "train.learning_rate=3e-2"]))
    cfg = load_run_config(overrides + [f"evaluate.adapter={second.run_id}", f"evaluate.baseline={first.run_id}",
                                       "evaluate.rows=[base,adapter]", "evaluate.questions=6",
                                       "generation.max_tokens=6"])
    table, out, md = evaluate(cfg)
    assert [t["row"] for t in table] == ["base", "adapter", "baseline"]
    assert len({t["test_loss"] for t in table}) == 3  # three different models
    compared = md.split("Differences, question by question")[1]
    rows = [line.split(" | ")[0].strip("| ") for line in compared.splitlines() if line.startswith("| ") and "-" in line]
    assert rows[-3:] == ["adapter - base", "baseline - base", "adapter - baseline"]
    for line in compared.splitlines()[-3:]:
        mean, interval = line.split(" | ")[1:3]
        lo, hi = (float(x) for x in interval.strip("[]").split(", "))
        assert lo <= float(mean) <= hi
    assert MlflowClient().get_run(out.name).data.params["evaluate.baseline"] == first.run_id


def test_an_unknown_baseline_is_refused_before_any_work(tmp_path, model_cache, small_csv):
    cfg = load_run_config(isolated_overrides(tmp_path, model_cache, small_csv)
                          + ["evaluate.baseline=nothing-here", "evaluate.rows=[base]"])
    with pytest.raises(UserError, match="evaluate.baseline='nothing-here'"):
        evaluate(cfg)
    assert not (tmp_path / "experiments" / "evaluation").exists()
