"""How a generated answer is scored against its reference answer, question by question.

Shared by ``medlora evaluate`` (:mod:`medlora.answers.metrics`) and the study's answer check
(:mod:`medlora.study.answer_check`), so that a trial's answers and an evaluation's are scored alike:

- similarity: cosine of all-MiniLM-L6-v2 sentence embeddings (:mod:`medlora.models.embeddings`);
- repetition: whether the answer repeats a run of 4 words (the looping the original run suffered from);
- words: the answer's length in words.
"""

from __future__ import annotations

import re
from collections import Counter

import numpy as np

from medlora.models.embeddings import cosine_similarity

_WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def repeats_a_4gram(text: str) -> bool:
    """True when some run of 4 words occurs twice or more."""
    tokens = words(text)
    grams = Counter(tuple(tokens[i : i + 4]) for i in range(len(tokens) - 3))
    return any(n > 1 for n in grams.values())


def similarities(answers: list[str], references: list[str], embedder) -> np.ndarray:
    """Each answer's cosine similarity to its reference (``embedder``: a loaded ``SentenceEmbedder``)."""
    return np.asarray(cosine_similarity(embedder.encode(answers), embedder.encode(references)))


def answer_scores(answers: list[str], references: list[str], embedder) -> dict[str, list[float]]:
    """Per-question ``similarity``, ``repetition`` (0/1) and ``words``, as plain lists (JSON-ready)."""
    return {"similarity": [round(float(s), 5) for s in similarities(answers, references, embedder)],
            "repetition": [float(repeats_a_4gram(a)) for a in answers],
            "words": [float(len(words(a))) for a in answers]}
