"""The consumer question set: health messages written the way people write them, with reference answers.

MedQuAD's questions are templates ("What is (are) Glaucoma?"); people write "my mom was just
diagnosed with glaucoma she is 72 ...", in lower case, with typos, several questions at once.
``consumer_questions.csv`` (next to this module; how it was written: ``README.md`` here) holds
such messages, each paired with the MedQuAD question it asks (``medquad_question`` + ``focus``),
so that the reference answer is that MedQuAD row's answer. The answers are not stored: they
are looked up in the prepared split the message's half names (``valid`` or ``test``), so a
message is only ever scored against an answer of the split it is used with.

Half the messages ask about conditions of the default split's **valid** split (for the
hyperparameter study), half about conditions of its **test** split (for ``medlora evaluate``).
A changed data config (another ``data.csv``, ``data.seed`` or fractions) moves conditions between
splits: the rows whose MedQuAD question is no longer in their half's split are dropped with one
warning line, and a half left empty is a :class:`UserError`.
This module must not import mlx.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from medlora.config import RunConfig
from medlora.data import splits
from medlora.errors import UserError

CONSUMER_CSV = Path(__file__).resolve().parent / "consumer_questions.csv"
HALVES = ("valid", "test")
COLUMNS = ("id", "half", "focus", "medquad_question", "style", "message")
# the data config the set was written against (the packaged defaults, conf/data/medquad.yaml)
WRITTEN_FOR = "data.csv=null data.seed=0 data.train_fraction=0.8 data.valid_fraction=0.1 data.test_fraction=0.1"


def read_set(path: Path = CONSUMER_CSV) -> pd.DataFrame:
    """The set's rows (strings only), in file order."""
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in COLUMNS if c not in table]
    if missing:
        raise UserError(f"consumer set {path} has no column(s) {', '.join(missing)} "
                        f"(fix: its header row must name {','.join(COLUMNS)})")
    return table


def _key(question: str, focus: str | None) -> tuple[str, str]:
    """Match key: whitespace collapsed and "X ?" written "X?" (as ``prepare`` cleans), focus case-folded
    (``prepare`` groups by the lower-cased focus)."""
    def clean(text: str) -> str:
        return " ".join(text.split()).replace(" ?", "?")

    return clean(question), clean(focus or "").casefold()


def resolve(rows: pd.DataFrame, split_records: list[dict]) -> tuple[list[dict], int, int]:
    """Records for ``rows`` against one split's records: (records, not found, ambiguous).

    Each record is the matched split record with its user message replaced by the consumer
    message (system prompt, reference answer, url and focus kept), plus the row's ``id`` as
    ``consumer_id``. A row whose question + focus is not in the split, or is there with more than
    one answer (no single reference), is left out and counted."""
    index: dict[tuple[str, str], list[dict]] = {}
    for record in split_records:
        index.setdefault(_key(record["messages"][-2]["content"], record.get("focus")), []).append(record)
    records, not_found, ambiguous = [], 0, 0
    for row in rows.itertuples(index=False):
        matches = index.get(_key(row.medquad_question, row.focus), [])
        if len(matches) != 1:
            not_found += not matches
            ambiguous += len(matches) > 1
            continue
        match = matches[0]
        messages = [dict(m) for m in match["messages"]]
        messages[-2]["content"] = row.message
        records.append({**match, "messages": messages, "consumer_id": row.id})
    return records, not_found, ambiguous


def consumer_records(cfg: RunConfig, half: str) -> list[dict]:
    """The consumer messages of ``half`` (``valid`` or ``test``) as chat records of the split of that
    name, prepared from ``cfg.data`` (under ``cfg.paths.processed``); the reference answers come from it.

    Rows whose MedQuAD question is not in that split are dropped with one warning line on stderr;
    none left is a :class:`UserError`."""
    if half not in HALVES:
        raise UserError(f"unknown half {half!r} of the consumer set (fix: use one of {', '.join(HALVES)})")
    rows = read_set()
    rows = rows[rows["half"] == half]
    split_dir = splits.prepare_from_config(cfg.data, cfg.paths.processed)
    records, not_found, ambiguous = resolve(rows, splits.load_split(split_dir, half))
    fractions = f"{cfg.data.train_fraction:g}/{cfg.data.valid_fraction:g}/{cfg.data.test_fraction:g}"
    source = cfg.data.csv or "the packaged MedQuAD"
    data = f"the {half} split of {source} (data.seed={cfg.data.seed}, fractions {fractions})"
    if not records:
        raise UserError(f"none of the {len(rows)} consumer questions of the {half} half is in {data}: the set was "
                        f"written for the default data split (fix: {WRITTEN_FOR})")
    if not_found or ambiguous:
        print(f"medlora: warning: {not_found + ambiguous} of the {len(rows)} consumer questions of the {half} half "
              f"dropped: {_why(not_found, ambiguous)} {data} (the set was written for {WRITTEN_FOR})", file=sys.stderr)
    return records


def _why(not_found: int, ambiguous: int) -> str:
    """Why rows were dropped, to be followed by the split's description."""
    if not ambiguous:
        return "their MedQuAD question is not in"
    if not not_found:
        return "their MedQuAD question has several answers (no single reference) in"
    return f"{not_found} have their MedQuAD question missing from, {ambiguous} with several answers in"
