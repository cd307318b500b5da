"""Held-out evaluation: base model vs adapter vs retrieval baseline vs retrieval-augmented answers.

On a seeded sample of the **test** split (never trained on, never used to pick a trial), either its
own MedQuAD questions (``evaluate.questions_set=split``) or the test half of the consumer set
(``consumer``: messages as people write them, about the test split's conditions, scored against
the MedQuAD answers they ask for; :mod:`medlora.data.consumer`):

- ``base``: the embedded model as shipped;
- ``adapter``: base + a LoRA adapter (the registry's ``champion`` by default);
- ``retrieval``: no model at all, the answer of the nearest training question (BM25);
- ``rag``: the adapter model given the retrieved answers as context (``ask.rag=true``).

Every row is scored against the reference answer with the same metrics: ROUGE-L F1
(``rouge-score``), cosine similarity of all-MiniLM-L6-v2 sentence embeddings
(:mod:`medlora.embeddings`), the share of answers that repeat a word 4-gram, and the mean
length in words. Model rows also get the test loss (mean answer-token cross-entropy, the
training objective) and its perplexity. Generation settings come from ``generation`` and are
the same for every row. The answers are scored as the model generates them: no safety triage,
caution line or answer check (:mod:`medlora.answers.safety`) is applied, so the table measures the
model itself (the triage flags none of MedQuAD's test questions, and a few of the consumer set's
messages: ``medlora/data/README.md``).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

from medlora import tracking
from medlora.answers.metrics import (
    METRICS,
    Row,
    comparisons,
    comparisons_markdown,
    evaluation_figure,
    markdown_table,
    per_question_similarity,
    score,
)
from medlora.answers.retrieval import BM25, context_prompt
from medlora.config import RunConfig
from medlora.data import splits
from medlora.data.questions import test_sample
from medlora.errors import UserError
from medlora.files import publish_dir, temporary_dir
from medlora.models.generation import generate_answers, load_with_adapter
from medlora.models.load import load_model

QUESTION_SETS = {"split": "Held-out test split", "consumer": "Consumer set, test half (people's wording)"}


def test_loss(cfg: RunConfig, model, tokenizer, records: list[dict]) -> float:
    """Mean answer-token cross-entropy on ``records`` (truncated like training), with the training loss."""
    from mlx_lm.tuner.trainer import evaluate as mlx_evaluate

    from medlora.data.tokenize import encode_chats
    from medlora.models.fastmath import fast_kernels
    from medlora.training.batches import batch_iterator
    from medlora.training.loss import training_loss

    dataset = encode_chats(records, tokenizer, mask_prompt=cfg.train.mask_prompt,
                           max_seq_length=cfg.train.max_seq_length, truncation=cfg.train.truncation)
    loss, _, extend = training_loss(cfg.train, model)
    batch = min(cfg.evaluate.loss_batch_size, len(dataset))
    model.eval()
    with fast_kernels(model, cfg.train.fast_math):
        return mlx_evaluate(model, dataset, batch_size=batch, num_batches=-1,
                            max_seq_length=cfg.train.max_seq_length, loss=loss,
                            iterate_batches=batch_iterator(0, batch, extend_eval=extend))


def resolve_adapter(cfg: RunConfig, dst: Path, key: str = "adapter") -> tuple[Path, str, object]:
    """The adapter ``evaluate.<key>`` names, downloaded into ``dst`` (:func:`medlora.registry.champion.
    resolve_adapter`): its folder, a label, and its registered version (None for a run or a folder)."""
    from medlora.registry.champion import RUN_ID
    from medlora.registry.champion import resolve_adapter as resolve

    ref = getattr(cfg.evaluate, key)
    if not (ref == "champion" or ref.isdigit() or RUN_ID.fullmatch(ref) or Path(ref).expanduser().is_dir()):
        raise UserError(f"evaluate.{key}={ref!r} is not 'champion', a registry version number, a 32-hex MLflow "
                        f"run id or an adapter folder (fix: evaluate.{key}=champion)")
    dst.mkdir(parents=True, exist_ok=True)
    return resolve(cfg, ref, dst)


def generate_all(cfg: RunConfig, model, tokenizer, prompts: list[str], label: str) -> list[str]:
    from tqdm import tqdm

    with tqdm(total=len(prompts), desc=f"medlora: {label} answers", unit="q", file=sys.stderr) as bar:
        return generate_answers(model, tokenizer, prompts, max_tokens=cfg.generation.max_tokens,
                                system_prompt=cfg.data.system_prompt, settings=cfg.generation,
                                batch_size=cfg.evaluate.generation_batch_size, on_batch=bar.update)


def run_rows(cfg: RunConfig, records: list[dict], adapter: Path | None, baseline: Path | None = None) -> list[Row]:
    """Answers (and test losses) for every configured row (``adapter``: the adapter rows' folder;
    ``baseline``: the ``evaluate.baseline`` adapter's, a row of its own after them)."""
    wanted = cfg.evaluate.rows
    questions = [r["messages"][-2]["content"] for r in records]
    rows = []
    if "base" in wanted:
        model, tokenizer = load_model(cfg.model, cfg.paths.models)
        loss = test_loss(cfg, model, tokenizer, records)
        rows.append(Row("base", generate_all(cfg, model, tokenizer, questions, "base"), loss))
    index = None
    if {"retrieval", "rag"} & set(wanted):
        split_dir = splits.prepare_from_config(cfg.data, cfg.paths.processed)
        index = BM25(splits.load_split(split_dir, "train"))
    if "retrieval" in wanted:
        rows.append(Row("retrieval", [_top_answer(index, q) for q in questions]))
    if adapter is not None:
        model, tokenizer = load_with_adapter(cfg, adapter)
        if "adapter" in wanted:
            loss = test_loss(cfg, model, tokenizer, records)
            rows.append(Row("adapter", generate_all(cfg, model, tokenizer, questions, "adapter"), loss))
        if "rag" in wanted:
            prompts = [context_prompt(q, index.search(q, cfg.ask.rag_passages)) for q in questions]
            rows.append(Row("rag", generate_all(cfg, model, tokenizer, prompts, "rag")))
    if baseline is not None:
        model, tokenizer = load_with_adapter(cfg, baseline)
        rows.append(Row("baseline", generate_all(cfg, model, tokenizer, questions, "baseline"),
                        test_loss(cfg, model, tokenizer, records)))
    order = {name: i for i, name in enumerate((*wanted, "baseline"))}
    return sorted(rows, key=lambda r: order[r.name])


def _top_answer(index, question: str) -> str:
    hits = index.search(question, 1)
    return hits[0].record["messages"][-1]["content"] if hits else ""


def evaluate(cfg: RunConfig) -> tuple[list[dict], Path, str]:
    """Run the evaluation, record it in MLflow and ``<paths.experiments>/evaluation/``; return the table.

    Everything that can be missing (the embedding model, the adapter) is checked before any answer
    is generated or any split prepared."""
    from medlora.models.embeddings import SentenceEmbedder

    embedder = SentenceEmbedder.load()
    with temporary_dir("eval") as tmp:
        folder, label, version = (resolve_adapter(cfg, tmp) if {"adapter", "rag"} & set(cfg.evaluate.rows)
                                  else (None, "-", None))
        baseline = resolve_adapter(cfg, tmp / "baseline", "baseline")[0] if cfg.evaluate.baseline else None
        records = test_sample(cfg)
        rows = run_rows(cfg, records, folder, baseline)
    references = [r["messages"][-1]["content"] for r in records]
    print(f"medlora: scoring {len(rows)} rows x {len(records)} answers", file=sys.stderr)
    similarities = per_question_similarity(rows, references, embedder)
    table = score(rows, references, embedder, similarities)
    strength = cfg.generation.adapter_strength
    note = (f" Adapters answer with their LoRA updates x {strength:g} (generation.adapter_strength)."
            if strength != 1 and folder is not None else "")
    md = (markdown_table(table, label, len(records), QUESTION_SETS[cfg.evaluate.questions_set], note)
          + comparisons_markdown(comparisons(rows, similarities)))
    out = _record(cfg, table, rows, records, label, md)
    if version is not None:  # the champion's model card gets the table
        from mlflow.tracking import MlflowClient

        from medlora.registry import model_card

        model_card.write(MlflowClient(), cfg, version, md)
    return table, out, md


def _record(cfg: RunConfig, table: list[dict], rows: list[Row], records: list[dict], label: str, md: str) -> Path:
    """The evaluation as an MLflow run (tag medlora.kind=evaluation) and ``<paths.experiments>/evaluation/<id>/``."""
    import mlflow
    import pandas as pd

    answers = pd.DataFrame({"question": [r["messages"][-2]["content"] for r in records],
                            "reference": [r["messages"][-1]["content"] for r in records],
                            "url": [r.get("url") or "" for r in records],
                            **({"consumer_id": [r["consumer_id"] for r in records]}
                               if cfg.evaluate.questions_set == "consumer" else {}),
                            **{row.name: row.answers for row in rows}})
    figure = evaluation_figure(table, title=f"{QUESTION_SETS[cfg.evaluate.questions_set]}, {len(records)} questions")
    with tracking.tracked_run(cfg.paths, cfg.experiment_name, cfg.run_name or "evaluate",
                              tags={"medlora.kind": "evaluation", "adapter": label}) as run:
        mlflow.log_params({"evaluate.questions": len(records), "evaluate.questions_set": cfg.evaluate.questions_set,
                           "evaluate.seed": cfg.evaluate.seed,
                           "evaluate.adapter": cfg.evaluate.adapter, "adapter_label": label,
                           "evaluate.baseline": cfg.evaluate.baseline,
                           **{f"generation.{k}": v for k, v in cfg.generation.model_dump().items()}})
        mlflow.log_metrics({f"{t['row']}.{m}": t[m] for t in table for m in METRICS if math.isfinite(t[m])})
        mlflow.log_table(pd.DataFrame(table), artifact_file="evaluation.json")
        mlflow.log_table(answers, artifact_file="answers.json")
        mlflow.log_text(md, "evaluation.md")
        mlflow.log_figure(figure, "evaluation.png")
        texts = {"evaluation.csv": pd.DataFrame(table).to_csv(index=False), "evaluation.md": md,
                 "answers.csv": answers.to_csv(index=False)}

        def fill(tmp: Path) -> None:
            for name, text in texts.items():
                (tmp / name).write_text(text)
            figure.savefig(tmp / "evaluation.png")

        out = cfg.paths.experiments / "evaluation" / run.info.run_id
        publish_dir(out, fill, marker="evaluation.md")
    return out
