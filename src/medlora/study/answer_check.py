"""Answer quality in the loop: a trial that reaches the top rung answers a fixed set of questions.

Validation loss ranks how well a configuration predicts MedQuAD's answers to MedQuAD's templated
questions; it does not see whether the answers to questions as people write them get better or
worse. So (``study.answers``) every complete trial's best adapter answers the same seeded sample of

- ``consumer``: the consumer set's **valid** half (messages as people write them, about valid-split
  conditions; the test half is only for ``medlora evaluate``), or
- ``split``: valid-split questions after the ones the study ranks on and the verdict's fresh ones,

decoded as ``generation.*`` says (``max_tokens`` from the study), scored question by question like
``medlora evaluate`` (:mod:`medlora.training.answer_scores`). The base model answers them once per
study (a study user attribute), so every trial is also compared with the untuned model:
``study.objective=similarity`` ranks trials by their answers, and ``medlora promote`` refuses an
adapter whose answers are worse than the base model's beyond the noise.
"""

from __future__ import annotations

import csv
import io
import random
import sys
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import optuna

from medlora.config import GenerationConfig, RunConfig
from medlora.config.study_schema import AnswerCheckConfig
from medlora.data import splits
from medlora.data.consumer import consumer_records
from medlora.files import temporary_dir
from medlora.models.generation import generate_answers, load_with_adapter
from medlora.models.load import load_model
from medlora.training.answer_scores import answer_scores
from medlora.training.batches import shuffled_valid
from medlora.training.heldout import paired_bootstrap

BASE_KEY = "answer_check_base"  # study user attribute: the base model's scores (and their signature)
SEED = 0  # the same questions in every study, so that studies compare
FRESH_VALIDATION = 32  # valid-split questions after the ranking subset that the verdict scores by loss; ``split``
                       # asks the questions after those


@dataclass(frozen=True)
class Questions:
    prompts: list[str]
    references: list[str]
    signature: str  # what was asked and how answers were decoded: scores of another signature do not compare


def questions(cfg: RunConfig, spec: AnswerCheckConfig) -> Questions:
    """The seeded sample of ``spec.questions`` questions of ``spec.set`` with their reference answers."""
    if spec.set == "consumer":
        records = consumer_records(cfg, "valid")
    else:
        valid = shuffled_valid(cfg, splits.prepare_from_config(cfg.data, cfg.paths.processed))
        records = valid[cfg.train.val_examples + FRESH_VALIDATION:] or valid
    sample = random.Random(SEED).sample(records, min(spec.questions, len(records)))
    return from_records(sample, spec.set, spec.max_tokens, cfg.generation)


def from_records(records: list[dict], label: str, max_tokens: int, settings: GenerationConfig) -> Questions:
    """Chat records (question = the last user message, reference = the answer) as :class:`Questions`.

    The signature names the decoding too: a study resumed after ``generation.*`` changed answers
    anew with the base model instead of comparing its new answers with the old ones."""
    decoding = ",".join(f"{k}={v}" for k, v in settings.model_dump().items() if k != "max_tokens")
    return Questions([r["messages"][-2]["content"] for r in records], [r["messages"][-1]["content"] for r in records],
                     f"{label}:{len(records)}:{max_tokens}:{decoding}")


@lru_cache(maxsize=1)
def embedder():
    from medlora.models.embeddings import SentenceEmbedder

    return SentenceEmbedder.load()


def answer(cfg: RunConfig, model, tokenizer, asked: Questions, spec: AnswerCheckConfig) -> dict:
    """The model's answers to ``asked`` and their per-question scores (lists), with the signature."""
    answers = generate_answers(model, tokenizer, asked.prompts, max_tokens=spec.max_tokens,
                               system_prompt=cfg.data.system_prompt, settings=cfg.generation,
                               batch_size=cfg.evaluate.generation_batch_size)
    return {**answer_scores(answers, asked.references, embedder()), "answers": answers,
            "signature": asked.signature}


def base_scores(study: optuna.Study, cfg: RunConfig, asked: Questions, spec: AnswerCheckConfig) -> dict:
    """The base model's scores on ``asked``: computed once per study (and again if the questions change)."""
    stored = study.user_attrs.get(BASE_KEY)
    if stored and stored.get("signature") == asked.signature:
        return stored
    model, tokenizer = load_model(cfg.model, cfg.paths.models)
    scores = answer(cfg, model, tokenizer, asked, spec)
    del scores["answers"]
    study.set_user_attr(BASE_KEY, scores)
    return scores


def adapter_scores(cfg: RunConfig, run_id: str, asked: Questions, spec: AnswerCheckConfig) -> dict:
    """A trial's best adapter (its MLflow run's ``adapters/best``) answering ``asked``."""
    import mlflow

    with temporary_dir("answer-check") as tmp:
        folder = mlflow.artifacts.download_artifacts(f"runs:/{run_id}/adapters/best", dst_path=str(tmp))
        model, tokenizer = load_with_adapter(cfg, folder)
    return answer(cfg, model, tokenizer, asked, spec)


def summary(scores: dict) -> dict[str, float]:
    """Means of the per-question scores: ``answer_similarity``, ``answer_repetition``, ``answer_words``."""
    return {f"answer_{k}": round(float(np.mean(scores[k])), 4) for k in ("similarity", "repetition", "words")}


def versus(ours: dict, theirs: dict) -> tuple[float, float, float] | None:
    """Mean similarity difference (ours - theirs) with its 95% paired bootstrap interval, or None when the
    two were not asked the same questions."""
    if ours.get("signature") != theirs.get("signature"):
        return None
    return paired_bootstrap(np.asarray(ours["similarity"]), np.asarray(theirs["similarity"]))


def score_trial(trial: optuna.Trial, cfg: RunConfig, run_id: str, asked: Questions, spec: AnswerCheckConfig) -> dict:
    """Score a complete trial's answers (and, the first time, the base model's): user attributes on the trial,
    metrics and an ``answers.csv`` on its MLflow run, one line printed. Returns the means."""
    import mlflow

    base = base_scores(trial.study, cfg, asked, spec)
    ours = adapter_scores(cfg, run_id, asked, spec)
    means, base_means = summary(ours), summary(base)
    diff, lo, hi = versus(ours, base)
    trial.set_user_attr("answer_scores", {k: ours[k] for k in ("similarity", "repetition", "words", "signature")})
    for key, value in {**means, "answer_similarity_vs_base": round(diff, 4),
                       "answer_similarity_vs_base_ci95": [round(lo, 4), round(hi, 4)]}.items():
        trial.set_user_attr(key, value)
    mlflow.log_metrics({**means, **{f"base_{k}": v for k, v in base_means.items()},
                        "answer_similarity_vs_base": diff}, run_id=run_id)
    mlflow.MlflowClient().log_text(run_id, _table(asked, ours), "answers/answers.csv")
    print(f"medlora: trial {trial.number} answers {len(asked.prompts)} questions ({spec.set}): similarity "
          f"{means['answer_similarity']:.3f} (base model {base_means['answer_similarity']:.3f}, difference "
          f"{diff:+.3f} [{lo:+.3f}, {hi:+.3f}]), repetition {means['answer_repetition']:.2f} "
          f"(base {base_means['answer_repetition']:.2f}), {means['answer_words']:.0f} words", file=sys.stderr)
    return means


def _table(asked: Questions, scores: dict) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["question", "answer", "similarity", "repeats_4gram", "reference"])
    for row in zip(asked.prompts, scores["answers"], scores["similarity"], scores["repetition"], asked.references):
        writer.writerow(row)
    return out.getvalue()


def worse_than_base(study: optuna.Study, trial) -> str | None:
    """Why ``trial``'s answers are worse than the base model's beyond the noise (similarity to the references,
    95% paired bootstrap interval below 0), or None (not worse, or not scored on the study's questions)."""
    base, ours = study.user_attrs.get(BASE_KEY), trial.user_attrs.get("answer_scores")
    compared = versus(ours, base) if base and ours else None
    if compared is None or compared[2] >= 0:
        return None
    diff, lo, hi = compared
    return (f"trial {trial.number}'s answers to the study's {len(ours['similarity'])} questions "
            f"({ours['signature'].split(':')[0]}) are less similar to the reference answers than the untuned "
            f"model's: {diff:+.3f} [{lo:+.3f}, {hi:+.3f}]")
