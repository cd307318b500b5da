"""Fit the semantic layer and choose the thresholds, on the tuning half only: ``python -m medlora.answers.triage.fit``.

1. Features (:func:`.semantic.embedder_features`) of every text involved are computed once.
2. Training set: the tuning half's rows, plus :data:`N_MEDQUAD` MedQuAD *training-split*
   questions as ordinary ones (a seeded sample; weighted together like one more class).
3. Cross-validation by *writer* (:func:`writer_of`: batches 1-3 are one writer, every other batch
   another): each writer's rows are scored by a classifier fitted on the other writers' rows, through
   the same :func:`.semantic.scores` and :func:`.rules.hits` the triage uses. New users write
   like nobody in the set, so the thresholds are chosen on how the layer does on a writer it has
   never seen (folds by situation group, as before, let a writer's own style leak across folds
   and chose thresholds that caught 0.6-0.8 of a new writer's red flags).
4. Thresholds, one per class and one for ``red_flag`` (any red flag), are chosen on those
   out-of-fold scores of the semantic layer *alone*: the rules were written on the tuning half,
   so they catch nearly all of it and would leave the semantic layer nothing to learn a
   threshold from; on new phrasings they miss some, and the semantic layer is the net under them.
   Starting from 1 (off), the red-flag thresholds are lowered step by step, most recall gained
   per false alarm first, while the semantic layer's false alarms stay within
   :data:`MAX_FALSE_ALARMS` of the tuning half's ordinary rows and of the MedQuAD
   *validation*-split questions; then the risky threshold, while caution lines (rules and
   semantic layer together) stay within :data:`MAX_CAUTIONS`.
5. The classifier is fitted on all of it and saved with the thresholds to ``classifier.npz``.

The held-out half and the MedQuAD test split are never read here.
"""

from __future__ import annotations

import random

import numpy as np

from medlora.answers.triage import labelled, rules, semantic
from medlora.answers.triage.labelled import CLASSES, RED_FLAGS, SCORES
from medlora.answers.triage.text import normalise

N_MEDQUAD, SEED = 600, 0
MAX_FALSE_ALARMS = {"ordinary": 0.01, "medquad": 0.001}
MAX_CAUTIONS = {"ordinary": 0.03, "medquad": 0.005}
GRID = np.round(1 - np.geomspace(0.7, 0.001, 100), 4)  # 0.3 .. 0.999, finer towards 1 (a confident network)


def medquad_questions(split: str, n: int | None = None) -> list[str]:
    """Distinct questions of a MedQuAD split of the default config (a seeded sample of ``n``)."""
    from medlora.config import load_run_config
    from medlora.data import splits

    cfg = load_run_config([])
    records = splits.load_split(splits.prepare_from_config(cfg.data, cfg.paths.processed), split)
    questions = sorted({r["messages"][-2]["content"] for r in records})
    return questions if n is None else random.Random(SEED).sample(questions, min(n, len(questions)))


class CachedFeatures:
    """A feature function that computes each distinct text once."""

    def __init__(self, features: semantic.Features) -> None:
        self.features, self.cache = features, {}

    def __call__(self, texts: list[str]) -> np.ndarray:
        todo = sorted({t for t in texts if t not in self.cache})
        if todo:
            self.cache.update(zip(todo, self.features(todo)))
        return np.stack([self.cache[t] for t in texts])


def fit_classifier(rows, negatives: list[str], features, thresholds=None) -> semantic.Classifier:
    """The network fitted on ``rows`` (labelled) and ``negatives`` (ordinary); each class weighs the same."""
    labels = [r.label for r in rows] + ["ordinary"] * len(negatives)
    counts = {c: labels.count(c) for c in CLASSES}
    weight = np.array([1.0 / counts[r.label] for r in rows] + [1.0 / len(negatives)] * len(negatives))
    x = features([normalise(t) for t in [r.text for r in rows] + negatives])
    layers = semantic.fit_network(x, np.array([CLASSES.index(c) for c in labels]), weight)
    risky = [r for r in rows if r.label == "risky"]
    return semantic.Classifier(layers, dict(thresholds or {}), features([normalise(r.text) for r in risky]),
                               tuple(r.kind for r in risky), semantic.tuning_digest())


def writer_of(row: labelled.Example) -> str:
    """Who wrote a row: batches 1-3 are the set's first writer; every later batch (fresh1, writer_b, ...) another."""
    return "first" if row.batch in ("1", "2", "3") else row.batch


def out_of_fold_scores(rows, negatives, features) -> np.ndarray:
    """(len(rows), len(SCORES)) scores, each row scored by a classifier that never saw its writer."""
    out = np.zeros((len(rows), len(SCORES)))
    for writer in sorted({writer_of(r) for r in rows}):
        clf = fit_classifier([r for r in rows if writer_of(r) != writer], negatives, features)
        for i, r in enumerate(rows):
            if writer_of(r) == writer:
                out[i] = semantic.scores(clf, features, r.text)
    return out


def rule_matrix(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(n, 4) red-flag rule hits in RED_FLAGS order, and (n,) whether a risky rule fires."""
    normalised = [normalise(t) for t in texts]
    red = np.array([[c in rules.hits(t) for c in RED_FLAGS] for t in normalised], dtype=bool)
    return red, np.array([rules.risky_kind(t) is not None for t in normalised], dtype=bool)


def flagged(p: np.ndarray, red_rules: np.ndarray, thresholds: dict[str, float]) -> np.ndarray:
    """Whether each row gets a red-flag message (any class's rule or score over its threshold)."""
    cols = [SCORES.index(c) for c in RED_FLAGS]
    by_class = (red_rules | (p[:, cols] >= np.array([thresholds[c] for c in RED_FLAGS]))).any(axis=1)
    return by_class | (p[:, SCORES.index("red_flag")] >= thresholds["red_flag"])


def choose_red_thresholds(p, red_rules, labels, p_medquad, rules_medquad) -> dict[str, float]:
    """Greedy: lower the red-flag threshold that catches the most per false alarm, within the budgets."""
    thresholds = {c: 1.0 for c in (*RED_FLAGS, "red_flag")}
    ordinary, red = labels == "ordinary", np.isin(labels, RED_FLAGS)
    limit = {"ordinary": MAX_FALSE_ALARMS["ordinary"] * ordinary.sum(),
             "medquad": MAX_FALSE_ALARMS["medquad"] * len(p_medquad)}
    while True:
        best = None
        for c in thresholds:
            for t in GRID[GRID < thresholds[c]][::-1]:
                trial = {**thresholds, c: float(t)}
                caught = flagged(p, red_rules, trial)
                fa, fa_mq = caught[ordinary].sum(), flagged(p_medquad, rules_medquad, trial).sum()
                if fa > limit["ordinary"] or fa_mq > limit["medquad"]:
                    break
                gain = caught[red].sum() - flagged(p, red_rules, thresholds)[red].sum()
                if gain > 0:
                    cost = fa - flagged(p, red_rules, thresholds)[ordinary].sum()
                    if best is None or gain / (cost + 0.5) > best[0]:
                        best = (gain / (cost + 0.5), c, float(t))
                    break
        if best is None:
            return thresholds
        thresholds[best[1]] = best[2]


def choose_risky_threshold(p, red_rules, risky_rules, labels, p_medquad, rules_medquad, thresholds) -> float:
    """The lowest risky threshold whose caution lines on ordinary questions stay within MAX_CAUTIONS."""
    col = CLASSES.index("risky")
    ordinary = labels == "ordinary"
    red_mq, risky_mq = rules_medquad
    for t in GRID:
        caution = ~flagged(p, red_rules, thresholds) & (risky_rules | (p[:, col] >= t))
        caution_mq = ~flagged(p_medquad, red_mq, thresholds) & (risky_mq | (p_medquad[:, col] >= t))
        if caution[ordinary].mean() <= MAX_CAUTIONS["ordinary"] and caution_mq.mean() <= MAX_CAUTIONS["medquad"]:
            return float(t)
    return 1.0


def report(p, red_rules, risky_rules, labels, thresholds) -> str:
    """Out-of-fold recall per red-flag class and false alarms, as printed by ``fit``."""
    caught = flagged(p, red_rules, thresholds)
    lines = [f"  {c}: recall {caught[labels == c].mean():.3f} ({(labels == c).sum()})" for c in RED_FLAGS]
    risky = ~caught & (risky_rules | (p[:, CLASSES.index("risky")] >= thresholds["risky"]))
    lines.append(f"  risky: caution {risky[labels == 'risky'].mean():.3f}; ordinary: false alarms "
                 f"{caught[labels == 'ordinary'].mean():.3f}, cautions {risky[labels == 'ordinary'].mean():.3f}")
    return "\n".join(lines)


def main() -> None:
    import medlora  # noqa: F401  (the fast BLAS before mlx)
    from medlora.models.embeddings import SentenceEmbedder

    rows = labelled.load()
    negatives, validation = medquad_questions("train", N_MEDQUAD), medquad_questions("valid")
    features = CachedFeatures(semantic.embedder_features(SentenceEmbedder.load()))
    labels = np.array([r.label for r in rows])
    p = out_of_fold_scores(rows, negatives, features)
    red_rules, risky_rules = rule_matrix([r.text for r in rows])
    final = fit_classifier(rows, negatives, features)
    p_mq = np.stack([semantic.scores(final, features, q) for q in validation])
    rules_mq = rule_matrix(validation)
    none, none_mq = np.zeros_like(red_rules), np.zeros_like(rules_mq[0])
    thresholds = choose_red_thresholds(p, none, labels, p_mq, none_mq)
    thresholds["risky"] = choose_risky_threshold(p, red_rules, risky_rules, labels, p_mq, rules_mq, thresholds)
    fit_classifier(rows, negatives, features, thresholds).save()
    print(f"thresholds: {thresholds}\nout-of-fold on the tuning half ({len(rows)} rows), semantic layer alone:")
    print(report(p, none, np.zeros_like(risky_rules), labels, thresholds))
    print("rules and semantic layer (the rules were written on these rows):")
    print(report(p, red_rules, risky_rules, labels, thresholds))
    print(f"MedQuAD validation questions flagged: {flagged(p_mq, rules_mq[0], thresholds).sum()} of {len(validation)}")


if __name__ == "__main__":
    main()
