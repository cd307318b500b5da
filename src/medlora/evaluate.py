"""Held-out evaluation: base model vs adapter vs retrieval baseline vs retrieval-augmented answers.

On a seeded sample of the **test** split (never trained on, never used to pick a trial):

- ``base``: the embedded model as shipped;
- ``adapter``: base + a LoRA adapter (the registry's ``champion`` by default);
- ``retrieval``: no model at all, the answer of the nearest training question (BM25);
- ``rag``: the adapter model given the retrieved answers as context (``ask.rag=true``).

Every row is scored against the reference answer with the same metrics: ROUGE-L F1
(``rouge-score``), cosine similarity of all-MiniLM-L6-v2 sentence embeddings
(:mod:`medlora.embeddings`), the share of answers that repeat a word 4-gram, and the mean
length in words. Model rows also get the test loss (mean answer-token cross-entropy, the
training objective) and its perplexity. Generation settings come from ``generation`` and are
the same for every row.
"""

from __future__ import annotations

import math
import random
import re
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medlora.config import RunConfig
from medlora.errors import UserError

METRICS = ("rougeL", "similarity", "repetition_rate", "mean_words", "test_loss", "perplexity")
_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class Row:
    name: str
    answers: list[str]
    test_loss: float = math.nan


def repeats_a_4gram(text: str) -> bool:
    """True when some run of 4 words occurs twice or more (the looping the original run suffered from)."""
    words = _WORD.findall(text.lower())
    grams = Counter(tuple(words[i : i + 4]) for i in range(len(words) - 3))
    return any(n > 1 for n in grams.values())


def rouge_l(answers: list[str], references: list[str]) -> list[float]:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return [scorer.score(ref, ans)["rougeL"].fmeasure for ans, ref in zip(answers, references)]


def score(rows: list[Row], references: list[str], embedder) -> list[dict]:
    """One dict of metrics per row (means over the questions)."""
    ref_vectors = embedder.encode(references)
    from medlora.embeddings import cosine_similarity

    table = []
    for row in rows:
        similarity = cosine_similarity(embedder.encode(row.answers), ref_vectors)
        table.append({
            "row": row.name,
            "rougeL": float(np.mean(rouge_l(row.answers, references))),
            "similarity": float(np.mean(similarity)),
            "repetition_rate": float(np.mean([repeats_a_4gram(a) for a in row.answers])),
            "mean_words": float(np.mean([len(_WORD.findall(a)) for a in row.answers])),
            "test_loss": row.test_loss,
            "perplexity": math.exp(row.test_loss) if math.isfinite(row.test_loss) else math.nan,
        })
    return table


def test_sample(cfg: RunConfig) -> list[dict]:
    """``evaluate.questions`` records of the test split, a seeded sample (all of it if smaller)."""
    from medlora import data

    split_dir = data.prepare_from_config(cfg.data, cfg.paths.processed)
    records = data.load_split(split_dir, "test")
    if not records:
        raise UserError(f"the test split of {cfg.data.csv} is empty (fix: data.test_fraction above 0)")
    return random.Random(cfg.evaluate.seed).sample(records, min(cfg.evaluate.questions, len(records)))


def test_loss(cfg: RunConfig, model, tokenizer, records: list[dict]) -> float:
    """Mean answer-token cross-entropy on ``records`` (truncated like training), with the training loss."""
    from mlx_lm.tuner.trainer import evaluate as mlx_evaluate

    from medlora.datasets import encode_chats
    from medlora.fastmath import fast_kernels
    from medlora.loss import training_loss
    from medlora.train import batch_iterator

    dataset = encode_chats(records, tokenizer, mask_prompt=cfg.train.mask_prompt,
                           max_seq_length=cfg.train.max_seq_length, truncation=cfg.train.truncation)
    loss, _, extend = training_loss(cfg.train, model)
    batch = min(cfg.evaluate.loss_batch_size, len(dataset))
    model.eval()
    with fast_kernels(model, cfg.train.fast_math):
        return mlx_evaluate(model, dataset, batch_size=batch, num_batches=-1,
                            max_seq_length=cfg.train.max_seq_length, loss=loss,
                            iterate_batches=batch_iterator(0, batch, extend_eval=extend))


def resolve_adapter(cfg: RunConfig, dst: Path) -> tuple[Path, str, object]:
    """The adapter folder named by ``evaluate.adapter`` (downloaded into ``dst``), a label for it, and
    its registered model version (for the champion; else None)."""
    import mlflow

    from medlora import promote, tracking

    name = cfg.evaluate.adapter
    if name == "champion":
        folder, version = promote.champion_adapter(cfg, dst)
        return folder, f"champion v{version.version}", version
    if Path(name).expanduser().is_dir():
        return Path(name).expanduser(), name, None
    if re.fullmatch(r"[0-9a-f]{32}", name):
        tracking.require_store(cfg.paths, "(fix: evaluate.adapter=champion or an adapter folder)")
        tracking.connect(cfg.paths)
        try:
            folder = mlflow.artifacts.download_artifacts(f"runs:/{name}/adapters/best", dst_path=str(dst))
        except Exception as err:
            raise UserError(f"run {name} has no adapters/best artifact ({type(err).__name__}) "
                            "(fix: evaluate.adapter=<id of a finished training run>)") from None
        return Path(folder), f"run {name[:8]}", None
    raise UserError(f"evaluate.adapter={name!r} is not 'champion', a 32-hex MLflow run id or an adapter folder "
                    "(fix: evaluate.adapter=champion)")


def generate_all(cfg: RunConfig, model, tokenizer, prompts: list[str], label: str) -> list[str]:
    from tqdm import tqdm

    from medlora.answer import generate_answers

    with tqdm(total=len(prompts), desc=f"medlora: {label} answers", unit="q", file=sys.stderr) as bar:
        return generate_answers(model, tokenizer, prompts, max_tokens=cfg.generation.max_tokens,
                                system_prompt=cfg.data.system_prompt, settings=cfg.generation,
                                batch_size=cfg.evaluate.generation_batch_size, on_batch=bar.update)


def run_rows(cfg: RunConfig, records: list[dict]) -> tuple[list[Row], str, object]:
    """Answers (and test losses) for every configured row; returns the rows, the adapter's label and its
    registered version (None unless it is the champion)."""
    from medlora import data, models
    from medlora.answer import load_with_adapter
    from medlora.retrieval import BM25, context_prompt

    wanted = cfg.evaluate.rows
    questions = [r["messages"][-2]["content"] for r in records]
    rows, label, version = [], "-", None
    if "base" in wanted:
        model, tokenizer = models.load_model(cfg.model, cfg.paths.models)
        loss = test_loss(cfg, model, tokenizer, records)
        rows.append(Row("base", generate_all(cfg, model, tokenizer, questions, "base"), loss))
    index = None
    if {"retrieval", "rag"} & set(wanted):
        split_dir = data.prepare_from_config(cfg.data, cfg.paths.processed)
        index = BM25(data.load_split(split_dir, "train"))
    if "retrieval" in wanted:
        rows.append(Row("retrieval", [_top_answer(index, q) for q in questions]))
    if {"adapter", "rag"} & set(wanted):
        with tempfile.TemporaryDirectory(prefix="medlora-eval-") as tmp:
            folder, label, version = resolve_adapter(cfg, Path(tmp))
            model, tokenizer = load_with_adapter(cfg, folder)
        if "adapter" in wanted:
            loss = test_loss(cfg, model, tokenizer, records)
            rows.append(Row("adapter", generate_all(cfg, model, tokenizer, questions, "adapter"), loss))
        if "rag" in wanted:
            prompts = [context_prompt(q, index.search(q, cfg.ask.rag_passages)) for q in questions]
            rows.append(Row("rag", generate_all(cfg, model, tokenizer, prompts, "rag")))
    order = {name: i for i, name in enumerate(wanted)}
    return sorted(rows, key=lambda r: order[r.name]), label, version


def _top_answer(index, question: str) -> str:
    hits = index.search(question, 1)
    return hits[0].record["messages"][-1]["content"] if hits else ""


def markdown_table(table: list[dict], label: str, n: int) -> str:
    names = {"adapter": f"adapter ({label})", "rag": f"rag ({label} + retrieved answers)"}
    lines = [f"Held-out test split, {n} questions.", "",
             "| row | ROUGE-L | similarity | repetition rate | mean words | test loss | perplexity |",
             "|---|---|---|---|---|---|---|"]
    for t in table:
        name = names.get(t["row"], t["row"])
        cells = [f"{t['rougeL']:.3f}", f"{t['similarity']:.3f}", f"{t['repetition_rate']:.2f}",
                 f"{t['mean_words']:.0f}", _maybe(t["test_loss"], 3), _maybe(t["perplexity"], 2)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _maybe(value: float, digits: int) -> str:
    return f"{value:.{digits}f}" if math.isfinite(value) else "-"


def evaluate(cfg: RunConfig) -> tuple[list[dict], Path, str]:
    """Run the evaluation, record it in MLflow and ``<paths.experiments>/evaluation/``; return the table."""
    import mlflow
    import pandas as pd

    from medlora import report, tracking
    from medlora.embeddings import SentenceEmbedder

    embedder = SentenceEmbedder.load()  # fails fast, before minutes of generation, when it is missing
    records = test_sample(cfg)
    rows, label, version = run_rows(cfg, records)
    references = [r["messages"][-1]["content"] for r in records]
    print(f"medlora: scoring {len(rows)} rows x {len(records)} answers", file=sys.stderr)
    table = score(rows, references, embedder)

    answers = pd.DataFrame({"question": [r["messages"][-2]["content"] for r in records], "reference": references,
                            "url": [r.get("url") or "" for r in records],
                            **{row.name: row.answers for row in rows}})
    md = markdown_table(table, label, len(records))
    figure = report.evaluation_figure(table, title=f"test split, {len(records)} questions")
    with tracking.tracked_run(cfg.paths, cfg.experiment_name, cfg.run_name or "evaluate",
                              tags={"medlora.kind": "evaluation", "adapter": label}) as run:
        mlflow.log_params({"evaluate.questions": len(records), "evaluate.seed": cfg.evaluate.seed,
                           "evaluate.adapter": cfg.evaluate.adapter, "adapter_label": label,
                           **{f"generation.{k}": v for k, v in vars(cfg.generation).items()}})
        mlflow.log_metrics({f"{t['row']}.{m}": t[m] for t in table for m in METRICS if math.isfinite(t[m])})
        mlflow.log_table(pd.DataFrame(table), artifact_file="evaluation.json")
        mlflow.log_table(answers, artifact_file="answers.json")
        mlflow.log_text(md, "evaluation.md")
        mlflow.log_figure(figure, "evaluation.png")
        out = report.write_atomically(cfg.paths.experiments / "evaluation" / run.info.run_id, {
            "evaluation.csv": pd.DataFrame(table).to_csv(index=False),
            "evaluation.md": md,
            "answers.csv": answers.to_csv(index=False),
        }, figures={"evaluation.png": figure})
    if version is not None:  # the champion's model card gets the table
        from mlflow.tracking import MlflowClient

        from medlora import model_card

        model_card.write(MlflowClient(), cfg, version, md)
    return table, out, md
