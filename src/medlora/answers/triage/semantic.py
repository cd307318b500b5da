"""The triage's semantic layer: a softmax classifier over sentence embeddings of the question.

Features of a text are its all-MiniLM-L6-v2 embedding (:class:`medlora.models.embeddings.
SentenceEmbedder`, 384 numbers) of the normalised text, next to a hashed bag of its words and
word pairs (:data:`HASH_DIM` numbers, unit length), so that both the meaning and the telling
words count. A small network (numpy: one hidden ReLU layer, class-balanced, L2) trained on the tuning
half of the labelled set plus MedQuAD training questions as ordinary ones maps them to a probability
per class.

A message is scored as a whole and, when it is long, piece by piece (:func:`.text.pieces`); each
class takes its highest probability, and ``red_flag`` the highest total probability of the four
red-flag classes (a message the classifier finds urgent but cannot place in one class). A piece
that is hypothetical, general or about the distant past (:func:`.rules.guards`) gets no red-flag
probability: "why do babies stop breathing" is a question about a situation, not one; nor does
any unit of a message that reassures ("she is fine and playing").

The fitted weights, thresholds and risky exemplars are in ``classifier.npz`` beside this module,
written by :mod:`.fit` (``python -m medlora.answers.triage.fit``).
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medlora.answers.triage import rules
from medlora.answers.triage.labelled import CLASSES, RED_FLAGS, SCORES, TUNING_CSV
from medlora.answers.triage.text import normalise, pieces

CLASSIFIER_NPZ = Path(__file__).with_name("classifier.npz")
HASH_DIM = 4096
HIDDEN, LEARNING_RATE = 64, 0.01  # the network's hidden units; Adam's step size
Features = Callable[[list[str]], np.ndarray]  # normalised texts -> (n, d) features


def bag_of_words(texts: list[str]) -> np.ndarray:
    """Hashed, unit-length indicators of each text's words and adjacent word pairs: (n, HASH_DIM)."""
    out = np.zeros((len(texts), HASH_DIM), dtype=np.float32)
    for i, text in enumerate(texts):
        words = text.split()
        for token in words + [f"{a}_{b}" for a, b in zip(words, words[1:])]:
            out[i, zlib.crc32(token.encode()) % HASH_DIM] = 1.0
        out[i] /= max(float(np.linalg.norm(out[i])), 1.0)
    return out


def embedder_features(embedder) -> Features:
    """The feature function of a loaded :class:`SentenceEmbedder`: embedding, then bag of words."""
    return lambda texts: np.hstack([embedder.encode(texts), bag_of_words(texts)])


def tuning_digest() -> str:
    """sha256 of the packaged tuning half: the classifier records which exemplars it was fitted on."""
    return hashlib.sha256(TUNING_CSV.read_bytes()).hexdigest()


@dataclass(frozen=True)
class Classifier:
    layers: tuple[tuple[np.ndarray, np.ndarray], ...]  # (weights, bias) per layer, ReLU between: a small network
    thresholds: dict[str, float]  # one per red-flag class, "red_flag" (any of them) and "risky"
    risky_exemplars: np.ndarray  # (m, d) features of the tuning half's risky rows
    risky_kinds: tuple[str, ...]
    tuning_sha256: str

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        return forward(self.layers, features)[0]

    def save(self, path: Path = CLASSIFIER_NPZ) -> None:
        layers = {f"{name}_{i}": a.astype(np.float32) for i, layer in enumerate(self.layers)
                  for name, a in zip(("weights", "bias"), layer)}
        np.savez_compressed(path, **layers, n_layers=np.array(len(self.layers)),
                            threshold_names=np.array(list(self.thresholds)),
                            threshold_values=np.array(list(self.thresholds.values()), dtype=np.float64),
                            risky_exemplars=self.risky_exemplars.astype(np.float32),
                            risky_kinds=np.array(self.risky_kinds), tuning_sha256=np.array(self.tuning_sha256),
                            classes=np.array(CLASSES))

    @classmethod
    def load(cls, path: Path = CLASSIFIER_NPZ) -> Classifier:
        with np.load(path) as z:
            if tuple(z["classes"]) != CLASSES:
                raise ValueError(f"{path.name} was fitted for classes {tuple(z['classes'])}, not {CLASSES}")
            thresholds = dict(zip(z["threshold_names"].tolist(), z["threshold_values"].tolist()))
            layers = tuple((z[f"weights_{i}"], z[f"bias_{i}"]) for i in range(int(z["n_layers"])))
            return cls(layers, thresholds, z["risky_exemplars"], tuple(z["risky_kinds"].tolist()),
                       str(z["tuning_sha256"]))


def forward(layers, x: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """(class probabilities, each layer's input): the layers with ReLU between them, then softmax."""
    inputs = []
    for i, (weights, bias) in enumerate(layers):
        inputs.append(x)
        x = x @ weights + bias
        if i < len(layers) - 1:
            x = np.maximum(x, 0.0)
    p = np.exp(x - x.max(axis=1, keepdims=True))
    return p / p.sum(axis=1, keepdims=True), inputs


def fit_network(x: np.ndarray, y: np.ndarray, weight: np.ndarray, hidden: int = HIDDEN, l2: float = 1e-3,
                steps: int = 300, seed: int = 0) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """A one-hidden-layer ReLU network (``hidden`` units), weighted, L2-regularised cross-entropy, full-batch
    Adam from a seeded start: deterministic. Across writers it generalises better than softmax regression
    on the same features (README beside this module)."""
    rng, k = np.random.default_rng(seed), len(CLASSES)
    sizes = [x.shape[1], hidden, k]
    params = [a for n_in, n_out in zip(sizes, sizes[1:])
              for a in (rng.normal(0.0, np.sqrt(2.0 / n_in), (n_in, n_out)), np.zeros(n_out))]
    moments = [(np.zeros_like(a), np.zeros_like(a)) for a in params]
    target, share = np.eye(k)[y], (weight / weight.sum())[:, None]
    for step in range(1, steps + 1):
        p, inputs = forward(tuple(zip(params[::2], params[1::2])), x)
        grad, grads = (p - target) * share, [None] * len(params)
        for i in range(len(params) - 2, -1, -2):
            grads[i], grads[i + 1] = inputs[i // 2].T @ grad + l2 * params[i], grad.sum(axis=0)
            if i:
                grad = (grad @ params[i].T) * (inputs[i // 2] > 0)
        for param, g, (m, v) in zip(params, grads, moments):
            m *= 0.9
            m += 0.1 * g
            v *= 0.999
            v += 0.001 * g * g
            param -= LEARNING_RATE * (m / (1 - 0.9**step)) / (np.sqrt(v / (1 - 0.999**step)) + 1e-8)
    return tuple(zip(params[::2], params[1::2]))


WHOLE_WORDS = 30  # a longer message is scored by its pieces only: its whole embedding blurs, and costs time


def units(text: str) -> list[str]:
    """What a message is scored on: itself (up to WHOLE_WORDS words), and its pieces when it has more than one."""
    parts = pieces(text)
    if len(parts) <= 1:
        return [text]
    return ([text] if len(text.split()) <= WHOLE_WORDS else []) + parts


def _guarded(unit: str, whole: bool) -> bool:
    clauses = rules.clauses(unit) or [unit]
    marked = [bool(rules.guards(c)) for c in clauses]
    return all(marked) if whole else any(marked)


def scores(classifier: Classifier, features: Features, text: str) -> np.ndarray:
    """The scores of ``text`` in :data:`SCORES` order: per class the highest probability over its
    units, then the highest total red-flag probability; no red-flag probability from a guarded unit."""
    normalised = [normalise(u) for u in units(text)]
    p = classifier.probabilities(features(normalised))
    red = [CLASSES.index(c) for c in RED_FLAGS]
    reassured = "reassured" in rules.guards(normalised[0])  # "..., she is laughing and playing": the whole message
    whole = len(normalised) == 1 or len(text.split()) <= WHOLE_WORDS
    for i, unit in enumerate(normalised):
        if reassured or _guarded(unit, whole=whole and i == 0):
            p[i, red] = 0.0
    out = np.append(p.max(axis=0), p[:, red].sum(axis=1).max())
    assert len(out) == len(SCORES)
    return out


def risky_kind(classifier: Classifier, features: Features, text: str) -> str:
    """The kind of the nearest risky exemplar (cosine of the features) to ``text``."""
    f = features([normalise(text)])[0]
    sims = classifier.risky_exemplars @ f / np.maximum(np.linalg.norm(classifier.risky_exemplars, axis=1), 1e-9)
    return classifier.risky_kinds[int(np.argmax(sims))]
