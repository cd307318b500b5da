"""The consumer question set: its file, its halves against the default split, the loader's drops and refusals."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from medlora.config import load_run_config
from medlora.data import consumer, splits
from medlora.data.consumer import HALVES, consumer_records, read_set, resolve
from medlora.errors import UserError

SET = read_set()


@pytest.fixture(scope="module")
def default_cfg(default_processed):
    return load_run_config([f"paths.processed={default_processed}"])


@pytest.fixture(scope="module")
def split_records(default_cfg) -> dict[str, list[dict]]:
    split_dir = splits.prepare_from_config(default_cfg.data, default_cfg.paths.processed)
    return {name: splits.load_split(split_dir, name) for name in splits.SPLITS}


def test_the_file_holds_messages_not_answers():
    assert list(SET.columns) == list(consumer.COLUMNS)  # no answer column: answers come from the split
    assert SET["id"].is_unique and set(SET["half"]) == set(HALVES)
    sizes = SET["half"].value_counts()
    assert sizes["valid"] == sizes["test"] >= 80
    assert (SET[["focus", "medquad_question", "message"]] != "").all().all()
    assert not SET["message"].duplicated().any()
    assert all(i.startswith(h[0]) for i, h in zip(SET["id"], SET["half"]))


def test_style_tags_say_what_the_message_is():
    """The mechanical tags are true of each message, and every style occurs often enough to measure."""
    for row in SET.itertuples():
        tags, words = set(row.style.split()), len(row.message.split())
        assert tags <= {"personal", "multi", "typo", "texting", "lower", "nopunct", "short", "long"}, row.id
        assert ("lower" in tags) == (row.message == row.message.lower()), row.id
        assert ("nopunct" in tags) == (re.search(r"[.,?!;:]", row.message) is None), row.id
        assert ("short" in tags) == (words <= 12) and ("long" in tags) == (words >= 40), row.id
    counts = pd.Series([t for s in SET["style"] for t in s.split()]).value_counts()
    assert counts.min() >= 15, counts


def test_every_row_resolves_under_the_default_config(default_cfg, split_records, capsys):
    for half in HALVES:
        rows = SET[SET["half"] == half]
        records = consumer_records(default_cfg, half)
        assert [r["consumer_id"] for r in records] == list(rows["id"])  # all of them, in file order
        answers = {r["messages"][-1]["content"] for r in split_records[half]}
        for record, row in zip(records, rows.itertuples()):
            assert record["messages"][-2] == {"role": "user", "content": row.message}
            assert record["messages"][-1]["role"] == "assistant" and record["messages"][-1]["content"] in answers
            assert record["focus"].casefold() == row.focus.casefold() and record["url"]
    assert capsys.readouterr().err == ""  # nothing dropped, no warning


def test_each_reference_is_the_one_answer_of_its_question(split_records):
    """MedQuAD repeats questions with different answers: the set uses only questions with exactly one."""
    for half in HALVES:
        records, not_found, ambiguous = resolve(SET[SET["half"] == half], split_records[half])
        assert (not_found, ambiguous) == (0, 0)
        other = "test" if half == "valid" else "valid"
        assert resolve(SET[SET["half"] == half], split_records[other])[0] == []


def test_the_halves_are_disjoint_conditions_of_the_valid_and_test_splits(split_records):
    focus_of = {name: {(r.get("focus") or "").casefold() for r in records} for name, records in split_records.items()}
    halves = {half: set(SET.loc[SET["half"] == half, "focus"].str.casefold()) for half in HALVES}
    assert not halves["valid"] & halves["test"]
    for half in HALVES:
        assert halves[half] <= focus_of[half]
        assert not halves[half] & (set().union(*focus_of.values()) - focus_of[half])  # a focus is in one split
    assert min(len(h) for h in halves.values()) >= 60  # many conditions, not a few asked many ways


def test_a_changed_split_drops_rows_with_one_warning(default_processed, split_records, capsys):
    cfg = load_run_config([f"paths.processed={default_processed}", "data.seed=1"])
    records = consumer_records(cfg, "test")
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "dropped" in err[0] and "data.seed=1" in err[0] and "data.seed=0" in err[0]
    dropped = int(re.search(r"warning: (\d+) of the 126", err[0]).group(1))
    assert 0 < len(records) < 126 and dropped == 126 - len(records)
    new_test = splits.load_split(splits.prepare_from_config(cfg.data, cfg.paths.processed), "test")
    assert {r["messages"][-1]["content"] for r in records} <= {r["messages"][-1]["content"] for r in new_test}


def test_no_row_left_is_a_user_error(tmp_path):
    rows = [{"question": f"What is disease {g}?", "answer": f"Disease {g} is a made-up disease.", "focus": f"D{g}"}
            for g in range(40)]
    csv = tmp_path / "other.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    cfg = load_run_config([f"data.csv={csv}", f"paths.processed={tmp_path / 'processed'}"])
    with pytest.raises(UserError, match=r"none of the 126 .* test half .*fix: data.csv=null data.seed=0"):
        consumer_records(cfg, "test")
    with pytest.raises(UserError, match="unknown half 'train'"):
        consumer_records(cfg, "train")


def test_a_question_with_several_answers_is_dropped_not_guessed():
    row = SET.iloc[:1]
    record = {"messages": [{"role": "user", "content": row["medquad_question"].iloc[0]},
                           {"role": "assistant", "content": "one answer"}], "focus": row["focus"].iloc[0]}
    twice = [record, json.loads(json.dumps(record).replace("one answer", "another answer"))]
    assert resolve(row, twice) == ([], 0, 1)
    found, _, _ = resolve(row, [record])
    assert found[0]["messages"][0]["content"] == row["message"].iloc[0]
    assert record["messages"][0]["content"] == row["medquad_question"].iloc[0]  # the split's record is untouched
