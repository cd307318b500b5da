"""The labelled triage set: its rows, its classes and the rule that splits it into tuning and held-out halves.

Each row is one phrasing written for the triage: ``group`` (the situation it belongs to: every
variant of one situation, and the ordinary question *about* it, share a group), ``label`` (one of
:data:`CLASSES`), ``kind`` (for ``risky`` rows: which dangerous instruction the question invites),
``variants`` (how it is written: ``lower;no_apostrophe;typo``...), ``batch`` (when it was written:
see the README beside this module) and ``text``.

The split is by group, never by row, so that "I can't breathe" and "i cant breathe" are never on
both sides: a group is held out when the first byte of ``sha256("medlora-triage/" + group)`` is
odd. The tuning half ships with the package (``tuning.csv`` beside this module: the semantic
layer's exemplars); the held-out half lives under ``tests/answers/data/`` and nothing is fitted
or chosen on it.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

RED_FLAGS = ("overdose", "self_harm", "child", "emergency")  # urgent: a fixed message, never an answer
CLASSES = (*RED_FLAGS, "risky", "ordinary")
SCORES = (*CLASSES, "red_flag")  # the semantic scores: one per class, and any red flag at all
RISKY_KINDS = ("dose_above_label", "double_dose", "stop_medicine", "alcohol_mix", "drug_mix")
TUNING_CSV = Path(__file__).with_name("tuning.csv")
FIELDS = ("group", "label", "kind", "variants", "batch", "text")


@dataclass(frozen=True)
class Example:
    group: str
    label: str
    kind: str
    variants: str
    batch: str
    text: str


def half(group: str) -> str:
    """``"heldout"`` or ``"tuning"``: the half a situation group belongs to (see the module docstring)."""
    return "heldout" if hashlib.sha256(f"medlora-triage/{group}".encode()).digest()[0] % 2 else "tuning"


def load(path: Path = TUNING_CSV) -> list[Example]:
    """The rows of a triage-set CSV (the packaged tuning half by default), checked."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = [Example(**{k: row[k] for k in FIELDS}) for row in csv.DictReader(f)]
    for row in rows:
        if row.label not in CLASSES or (row.label == "risky") != (row.kind in RISKY_KINDS):
            raise ValueError(f"{path.name}: bad label/kind {row.label!r}/{row.kind!r} for {row.text!r}")
    return rows


def write(path: Path, rows: list[Example]) -> None:
    """Write rows as a triage-set CSV (what :func:`load` reads)."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, FIELDS)
        writer.writeheader()
        writer.writerows({k: getattr(r, k) for k in FIELDS} for r in rows)
