"""BM25 retrieval over the training split: cited NIH sources for answers, context for RAG.

Documents are a record's question plus its focus (the disease), which is what a
user's question is about; the answer text stays out of the index so long
answers do not drown short ones. Pure numpy + an inverted index: 13k documents
index in well under a second.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
STOPWORDS = frozenset(
    "a an and are as at be by can do does for from has have how i if in is it its me my of on or should the "
    "their there these this to was what when where which who why will with you your are about get (are) "
    "is(are) information".split()
)


SUFFIXES = ("ations", "ation", "ments", "ment", "ing", "ed", "es", "s")


def stem(word: str) -> str:
    """A light suffix strip (treated, treatment, treatments -> treat); enough for question matching."""
    for suffix in SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 4:
            return word[: -len(suffix)]
    return word


def words(text: str) -> list[str]:
    return [stem(w) for w in _WORD.findall(text.lower()) if w not in STOPWORDS]


@dataclass(frozen=True)
class Hit:
    index: int
    score: float
    record: dict


class BM25:
    """Okapi BM25 (k1, b as in Robertson & Zaragoza) over a list of records."""

    def __init__(self, records: list[dict], k1: float = 1.5, b: float = 0.75):
        self.records = records
        self.k1, self.b = k1, b
        docs = [words(f"{r['messages'][-2]['content']} {r.get('focus') or ''}") for r in records]
        self.lengths = np.array([len(d) for d in docs], dtype=np.float64)
        self.mean_length = float(self.lengths.mean()) if len(docs) else 0.0
        postings: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for i, doc in enumerate(docs):
            for term, tf in Counter(doc).items():
                postings[term].append((i, tf))
        self.postings = {t: (np.array([i for i, _ in p]), np.array([tf for _, tf in p], dtype=np.float64))
                         for t, p in postings.items()}
        n = len(docs)
        self.idf = {t: math.log(1 + (n - len(p[0]) + 0.5) / (len(p[0]) + 0.5)) for t, p in self.postings.items()}

    def search(self, query: str, k: int = 3) -> list[Hit]:
        scores = np.zeros(len(self.records))
        norm = self.k1 * (1 - self.b + self.b * self.lengths / max(self.mean_length, 1e-9))
        for term in set(words(query)):
            if term not in self.postings:
                continue
            ids, tf = self.postings[term]
            scores[ids] += self.idf[term] * tf * (self.k1 + 1) / (tf + norm[ids])
        best = np.argsort(-scores, kind="stable")[:k]
        return [Hit(int(i), float(scores[i]), self.records[i]) for i in best if scores[i] > 0]


def sources(hits: list[Hit]) -> list[str]:
    """One citation line per distinct source page: its URL (or, without a url column, its question)."""
    seen, lines = set(), []
    for hit in hits:
        url = hit.record.get("url") or hit.record["messages"][-2]["content"]
        if url not in seen:
            seen.add(url)
            lines.append(url)
    return lines


def context_prompt(question: str, hits: list[Hit], max_chars: int = 1200) -> str:
    """The question with retrieved NIH answers as context (retrieval-augmented answering)."""
    passages = "\n\n".join(f"[{n}] {h.record['messages'][-1]['content'][:max_chars]}" for n, h in enumerate(hits, 1))
    return f"Use these NIH passages if they help.\n\n{passages}\n\nQuestion: {question}"
