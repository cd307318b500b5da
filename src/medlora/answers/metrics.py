"""How answers are scored against reference answers, and how the scores are shown.

ROUGE-L F1 (``rouge-score``), cosine similarity of all-MiniLM-L6-v2 sentence embeddings
(:mod:`medlora.models.embeddings`), the share of answers that repeat a word 4-gram, the mean
length in words, and for model rows the test loss and its perplexity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from medlora.training.answer_scores import repeats_a_4gram, similarities, words

METRICS = ("rougeL", "similarity", "repetition_rate", "mean_words", "test_loss", "perplexity")


@dataclass(frozen=True)
class Row:
    name: str
    answers: list[str]
    test_loss: float = math.nan


def rouge_l(answers: list[str], references: list[str]) -> list[float]:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return [scorer.score(ref, ans)["rougeL"].fmeasure for ans, ref in zip(answers, references)]


def per_question_similarity(rows: list[Row], references: list[str], embedder) -> dict[str, np.ndarray]:
    """Each row's cosine similarity to the reference, question by question."""
    return {row.name: similarities(row.answers, references, embedder) for row in rows}


def comparisons(rows: list[Row], similarity: dict[str, np.ndarray]) -> list[dict]:
    """Model rows against each other, question by question: the mean difference in similarity and in
    repetition (share of answers repeating a 4-gram), each with a 95% paired bootstrap interval."""
    from medlora.training.heldout import paired_bootstrap

    names = [r.name for r in rows]
    pairs = [(a, b) for a, b in (("adapter", "base"), ("baseline", "base"), ("adapter", "baseline"))
             if a in names and b in names]
    answers = {r.name: r.answers for r in rows}
    out = []
    for a, b in pairs:
        rep_a, rep_b = ([float(repeats_a_4gram(x)) for x in answers[name]] for name in (a, b))
        out.append({"pair": f"{a} - {b}", "similarity": paired_bootstrap(similarity[a], similarity[b]),
                    "repetition_rate": paired_bootstrap(np.array(rep_a), np.array(rep_b))})
    return out


def comparisons_markdown(compared: list[dict]) -> str:
    """The comparisons as a markdown table (empty when there is nothing to compare)."""
    if not compared:
        return ""
    lines = ["", "Differences, question by question (95% paired bootstrap interval over questions):", "",
             "| rows | similarity | 95% interval | repetition rate | 95% interval |", "|---|---|---|---|---|"]
    for c in compared:
        (s, slo, shi), (r, rlo, rhi) = c["similarity"], c["repetition_rate"]
        lines.append(f"| {c['pair']} | {s:+.3f} | [{slo:+.3f}, {shi:+.3f}] | {r:+.2f} | [{rlo:+.2f}, {rhi:+.2f}] |")
    return "\n".join(lines) + "\n"


def score(rows: list[Row], references: list[str], embedder,
          similarities: dict[str, np.ndarray] | None = None) -> list[dict]:
    """One dict of metrics per row (means over the questions)."""
    similarities = similarities or per_question_similarity(rows, references, embedder)
    table = []
    for row in rows:
        similarity = similarities[row.name]
        table.append({
            "row": row.name,
            "rougeL": float(np.mean(rouge_l(row.answers, references))),
            "similarity": float(np.mean(similarity)),
            "repetition_rate": float(np.mean([repeats_a_4gram(a) for a in row.answers])),
            "mean_words": float(np.mean([len(words(a)) for a in row.answers])),
            "test_loss": row.test_loss,
            "perplexity": math.exp(row.test_loss) if math.isfinite(row.test_loss) else math.nan,
        })
    return table


def markdown_table(table: list[dict], label: str, n: int, questions: str = "Held-out test split", note: str = "") -> str:
    """The table as markdown, under a line naming the question set (``questions``) and its size (then ``note``)."""
    names = {"adapter": f"adapter ({label})", "rag": f"rag ({label} + retrieved answers)"}
    lines = [f"{questions}, {n} questions.{note}", "",
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


def evaluation_figure(table: list[dict], title: str = ""):
    """One panel per metric, one bar per row (base, adapter, retrieval, rag)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("rougeL", "ROUGE-L F1 (higher is better)"), ("similarity", "MiniLM cosine similarity (higher)"),
              ("repetition_rate", "answers repeating a 4-gram (lower)"), ("test_loss", "test loss, nats (lower)")]
    fig, axes = plt.subplots(1, len(panels), figsize=(13, 3.6), dpi=110)
    names = [t["row"] for t in table]
    colors = [f"C{i}" for i in range(len(table))]
    for ax, (key, label) in zip(axes, panels):
        values = [t[key] for t in table]
        bars = ax.bar(names, [v if v == v else 0.0 for v in values], color=colors)
        for bar, value in zip(bars, values):
            ax.annotate("n/a" if value != value else f"{value:.3f}", (bar.get_x() + bar.get_width() / 2,
                        bar.get_height()), ha="center", va="bottom", fontsize=8)
        ax.set_title(label, fontsize=9)
        ax.tick_params(axis="x", labelsize=8, rotation=20)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    plt.close(fig)
    return fig
