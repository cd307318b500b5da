"""Tests for medlora.data: cleaning, grouped split, determinism, reuse, bad input, real data."""

from __future__ import annotations

import csv
import gzip
import io
import json
from pathlib import Path

import pandas as pd
import pytest

from medlora import files
from medlora.data.csv_input import PACKAGED_CSV
from medlora.data import splits as data
from medlora.config import DataConfig
from medlora.data.splits import SPLITS, load_split, prepare, prepare_from_config
from medlora.errors import UserError

REAL_CSV = PACKAGED_CSV
FRACTIONS = {"train_fraction": 0.6, "valid_fraction": 0.2, "test_fraction": 0.2}


def csv_text(header: list[str], rows: list[list[str]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def filler_rows(n_groups: int, per_group=lambda g: 1 + g % 4) -> list[list[str]]:
    """Rows of (question, answer, focus, url): group g has per_group(g) distinct questions."""
    return [[f"How is disease {g} treated, variant {k}?", f"Answer {k} about disease {g}.", f"Disease {g}",
             f"https://example.org/{g}"] for g in range(n_groups) for k in range(per_group(g))]


def write_csv(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return path


def run(csv_path: Path, root: Path, **kwargs) -> Path:
    args = {**FRACTIONS, "seed": 0, **kwargs}
    return prepare(csv_path, root, **args)


def all_records(split_dir: Path) -> dict[str, list[dict]]:
    return {name: load_split(split_dir, name) for name in SPLITS}


def manifest(split_dir: Path) -> dict:
    return json.loads((split_dir / "manifest.json").read_text(encoding="utf-8"))


def user_text(record: dict) -> str:
    return next(m["content"] for m in record["messages"] if m["role"] == "user")


def assistant_text(record: dict) -> str:
    return next(m["content"] for m in record["messages"] if m["role"] == "assistant")


# ---------------------------------------------------------------- cleaning and format


def test_cleaning_normalises_text_and_drops_blanks_and_duplicates(tmp_path):
    special = [
        ["What is (are) Glaucoma ?", "Glaucoma is\n  a group of   eye diseases.", "Glaucoma", "u1"],
        ["  What is (are)   Glaucoma  ?  ", "Glaucoma is a group of eye diseases.", "glaucoma", "u2"],  # dup after cleaning
        ["", "An answer without a question.", "Orphan", "u3"],
        ["A question without an answer?", "   \n ", "Orphan", "u4"],
    ]
    fillers = filler_rows(30)
    path = write_csv(tmp_path / "qa.csv", csv_text(["question", "answer", "focus", "url"], special + fillers))

    split_dir = run(path, tmp_path / "processed")
    records = [r for rs in all_records(split_dir).values() for r in rs]
    counts = manifest(split_dir)["counts"]

    assert counts["rows_read"] == len(special) + len(fillers)
    assert counts["dropped_blank"] == 2
    assert counts["dropped_duplicates"] == 1
    assert sum(counts["rows"].values()) == len(records) == len(fillers) + 1
    glaucoma = [r for r in records if "Glaucoma" in user_text(r)]
    assert len(glaucoma) == 1
    assert user_text(glaucoma[0]) == "What is (are) Glaucoma?"
    assert assistant_text(glaucoma[0]) == "Glaucoma is a group of eye diseases."
    assert glaucoma[0]["focus"] == "Glaucoma" and glaucoma[0]["url"] == "u1"  # the first copy is kept
    for r in records:
        for m in r["messages"]:
            assert m["content"] == " ".join(m["content"].split()) and " ?" not in m["content"]


def test_chat_format_with_and_without_system_prompt(tmp_path):
    path = write_csv(tmp_path / "qa.csv", csv_text(["question", "answer", "focus", "url"], filler_rows(20)))
    plain = all_records(run(path, tmp_path / "a"))["train"][0]
    assert [m["role"] for m in plain["messages"]] == ["user", "assistant"]
    assert set(plain) == {"messages", "focus", "url"}

    prompted_dir = run(path, tmp_path / "b", system_prompt="You are a careful medical assistant.")
    prompted = all_records(prompted_dir)["train"][0]
    assert prompted["messages"][0] == {"role": "system", "content": "You are a careful medical assistant."}
    assert prompted["messages"][1:] == plain["messages"]
    assert manifest(prompted_dir)["config"]["system_prompt"] == "You are a careful medical assistant."


# ---------------------------------------------------------------- grouped split


def test_split_keeps_each_focus_in_one_split(tmp_path):
    rows = filler_rows(80, per_group=lambda g: 1 + g % 6)
    # The same disease written three ways is one group.
    rows += [[f"Variant question {i}?", f"Variant answer {i}.", focus, "u"]
             for i, focus in enumerate(["Flu", "  flu ", "FLU", "Flu"])]
    path = write_csv(tmp_path / "qa.csv", csv_text(["question", "answer", "focus", "url"], rows))
    split_dir = run(path, tmp_path / "processed")
    records = all_records(split_dir)

    foci = {name: {" ".join(r["focus"].split()).lower() for r in rs} for name, rs in records.items()}
    assert not foci["train"] & foci["valid"] and not foci["train"] & foci["test"] and not foci["valid"] & foci["test"]
    m = manifest(split_dir)
    assert m["group_by"] == "focus"
    assert m["counts"]["groups"] == {name: len(foci[name]) for name in SPLITS}
    assert sum(m["counts"]["groups"].values()) == 81
    for name in SPLITS:
        assert m["counts"]["rows"][name] == len(records[name])
        assert abs(len(records[name]) / len(rows) - FRACTIONS[f"{name}_fraction"]) < 0.1


def test_bare_two_column_csv_groups_by_question(tmp_path):
    rows = [[f"What causes condition {i} ?", f"Cause {i}."] for i in range(40)]
    rows += [[f"what causes  condition {i}?", f"Another source's answer {i}."] for i in range(0, 40, 3)]
    path = write_csv(tmp_path / "pairs.csv", csv_text(["question", "answer"], rows))
    split_dir = run(path, tmp_path / "processed")
    records = all_records(split_dir)

    assert manifest(split_dir)["group_by"] == "question"
    assert all(set(r) == {"messages"} for rs in records.values() for r in rs)
    assert sum(len(rs) for rs in records.values()) == len(rows)
    questions = {name: {user_text(r).lower() for r in rs} for name, rs in records.items()}
    assert not questions["train"] & questions["valid"] and not questions["train"] & questions["test"]
    assert not questions["valid"] & questions["test"]


def test_rows_with_blank_focus_are_grouped_by_question(tmp_path):
    rows = filler_rows(30) + [["Shared question?", f"Answer {i}.", "", "u"] for i in range(3)]
    path = write_csv(tmp_path / "qa.csv", csv_text(["question", "answer", "focus", "url"], rows))
    records = all_records(run(path, tmp_path / "processed"))
    holding = [name for name, rs in records.items() if any(user_text(r) == "Shared question?" for r in rs)]
    assert len(holding) == 1
    assert sum(user_text(r) == "Shared question?" for r in records[holding[0]]) == 3
    assert all(r["focus"] is None for r in records[holding[0]] if user_text(r) == "Shared question?")


def test_zero_test_fraction_gives_an_empty_test_split(tmp_path):
    path = write_csv(tmp_path / "qa.csv", csv_text(["question", "answer", "focus", "url"], filler_rows(20)))
    split_dir = run(path, tmp_path / "processed", train_fraction=0.8, valid_fraction=0.2, test_fraction=0.0)
    records = all_records(split_dir)
    assert records["test"] == [] and (split_dir / "test.jsonl").read_bytes() == b""
    assert len(records["train"]) + len(records["valid"]) == len(filler_rows(20))


# ---------------------------------------------------------------- determinism, reuse, encodings


def test_same_input_gives_byte_identical_files(tmp_path):
    path = write_csv(tmp_path / "qa.csv", csv_text(["question", "answer", "focus", "url"], filler_rows(50)))
    first, second = run(path, tmp_path / "one"), run(path, tmp_path / "two")
    assert first.name == second.name and len(first.name) == 12
    for name in ["train.jsonl", "valid.jsonl", "test.jsonl", "manifest.json"]:
        assert (first / name).read_bytes() == (second / name).read_bytes()
    assert b"\r\n" not in (first / "train.jsonl").read_bytes()

    other_seed = run(path, tmp_path / "one", seed=1)
    assert other_seed.name != first.name
    assert all_records(other_seed) != all_records(first)
    assert {p.name for p in (tmp_path / "one").iterdir()} == {first.name, other_seed.name}


def test_existing_split_is_reused_without_rework(tmp_path, monkeypatch):
    path = write_csv(tmp_path / "qa.csv", csv_text(["question", "answer", "focus", "url"], filler_rows(20)))
    split_dir = run(path, tmp_path / "processed")
    before = {p.name: p.stat().st_mtime_ns for p in split_dir.iterdir()}

    def must_not_parse(*args, **kwargs):
        raise AssertionError("the CSV was parsed again")

    monkeypatch.setattr(data, "parse", must_not_parse)
    assert run(path, tmp_path / "processed") == split_dir
    assert {p.name: p.stat().st_mtime_ns for p in split_dir.iterdir()} == before


def test_incomplete_folder_is_rebuilt(tmp_path):
    path = write_csv(tmp_path / "qa.csv", csv_text(["question", "answer", "focus", "url"], filler_rows(20)))
    split_dir = run(path, tmp_path / "processed")
    (split_dir / "manifest.json").unlink()
    assert run(path, tmp_path / "processed") == split_dir
    assert manifest(split_dir)["split_id"] == split_dir.name


def test_bom_crlf_and_gzip_read_like_plain_csv(tmp_path):
    text = csv_text(["question", "answer", "focus", "url"], filler_rows(25) + [["Qu'est-ce que la fièvre ?", "Une température élevée.", "Fièvre", "u"]])
    plain = run(write_csv(tmp_path / "plain.csv", text), tmp_path / "processed")
    windows = run(write_csv(tmp_path / "win.csv", b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode()), tmp_path / "processed")
    zipped = run(write_csv(tmp_path / "qa.csv.gz", gzip.compress(text.encode(), mtime=0)), tmp_path / "processed")
    assert len({plain.name, windows.name, zipped.name}) == 3  # different bytes, different ids
    assert all_records(windows) == all_records(plain) == all_records(zipped)
    assert "fièvre" in (plain / "train.jsonl").read_text(encoding="utf-8") + (plain / "valid.jsonl").read_text(
        encoding="utf-8") + (plain / "test.jsonl").read_text(encoding="utf-8")  # not \u-escaped


def test_prepare_from_config_matches_prepare(tmp_path):
    path = write_csv(tmp_path / "qa.csv", csv_text(["question", "answer", "focus", "url"], filler_rows(20)))
    cfg = DataConfig(csv=path, seed=3, system_prompt=None, **FRACTIONS)
    assert prepare_from_config(cfg, tmp_path / "processed") == run(path, tmp_path / "processed", seed=3)


# ---------------------------------------------------------------- bad input


GOOD = csv_text(["question", "answer", "focus"], [[f"Q{i}?", f"A{i}.", f"F{i}"] for i in range(20)])


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "not found"),
        (csv_text(["question", "reply"], [["Q?", "A."]]), "no 'answer' column (found: question, reply)"),
        (csv_text(["prompt", "answer"], [["Q?", "A."]]), "no 'question' column"),
        ("", "is empty"),
        ("question,answer\n", "no usable rows"),
        (csv_text(["question", "answer"], [["", "A."], ["Q?", "  "]]), "no usable rows"),
        ("question,answer\nQ?,A.\n".encode() + "Fi\u00e8vre?,Oui.\n".encode("latin-1"), "not UTF-8"),
        ('question,answer\n"Q?,A.\nQ2?,A2.\n', "not a readable CSV"),
        ("question,answer\nQ1?,A1.\nQ2?,A2.,extra,fields\n", "not a readable CSV"),
        (b"PK\x03\x04" + b"\x00" * 40, "zip archive"),
        (gzip.compress(GOOD.encode())[:-12], "damaged gzip"),
        (csv_text(["question", "answer"], [["Q1?", "A1."], ["Q2?", "A2."]]), "too few groups"),
    ],
)
def test_bad_input_raises_one_line_user_error_and_writes_nothing(tmp_path, content, problem):
    path = tmp_path / "input.csv"
    if content is not None:
        write_csv(path, content)
    root = tmp_path / "processed"
    with pytest.raises(UserError) as info:
        run(path, root)
    message = str(info.value)
    assert problem in message and "fix:" in message and "\n" not in message
    assert not root.exists() or not any(root.iterdir())


def test_not_utf8_message_says_how_to_fix(tmp_path):
    path = write_csv(tmp_path / "latin.csv", "question,answer\nFièvre?,Oui.\n".encode("cp1252"))
    with pytest.raises(UserError, match="save it as UTF-8"):
        run(path, tmp_path / "processed")


@pytest.mark.parametrize("fractions", [(0.8, 0.1, 0.2), (0.9, 0.0, 0.1), (1.0, 0.0, 0.0), (-0.1, 0.6, 0.5)])
def test_bad_fractions_raise_user_error(tmp_path, fractions):
    path = write_csv(tmp_path / "qa.csv", GOOD)
    with pytest.raises(UserError, match="fix:"):
        prepare(path, tmp_path / "processed", train_fraction=fractions[0], valid_fraction=fractions[1],
                test_fraction=fractions[2], seed=0)
    assert not (tmp_path / "processed").exists()


def test_failure_while_writing_leaves_no_half_written_split(tmp_path, monkeypatch):
    path = write_csv(tmp_path / "qa.csv", GOOD)
    root = tmp_path / "processed"

    def failing_rename(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "rename", failing_rename)
    with pytest.raises(OSError, match="disk full"):
        run(path, root)
    assert list(root.iterdir()) == []


def test_load_split_rejects_unknown_or_missing_split(tmp_path):
    with pytest.raises(UserError, match="fix:"):
        load_split(tmp_path, "training")
    with pytest.raises(UserError, match="not found"):
        load_split(tmp_path, "train")


# ---------------------------------------------------------------- the real data set


def test_real_medquad_split(tmp_path):
    split_dir = prepare(REAL_CSV, tmp_path, train_fraction=0.8, valid_fraction=0.1, test_fraction=0.1, seed=0)
    m = manifest(split_dir)
    counts, records = m["counts"], all_records(split_dir)

    assert counts["rows_read"] == len(pd.read_csv(REAL_CSV))
    kept = counts["rows_read"] - counts["dropped_blank"] - counts["dropped_duplicates"]
    assert sum(counts["rows"].values()) == sum(len(rs) for rs in records.values()) == kept
    assert counts["dropped_duplicates"] > 0
    pairs = [(user_text(r), assistant_text(r)) for rs in records.values() for r in rs]
    assert len(set(pairs)) == len(pairs)
    for name in SPLITS:
        assert len(records[name]) == counts["rows"][name]
        assert abs(len(records[name]) / kept - m["config"][f"{name}_fraction"]) < 0.02

    foci = {name: {" ".join(r["focus"].split()).lower() for r in rs if r["focus"]} for name, rs in records.items()}
    assert not foci["train"] & foci["valid"] and not foci["train"] & foci["test"] and not foci["valid"] & foci["test"]
    assert m["group_by"] == "focus" and m["input_file"] == REAL_CSV.name


def test_training_split_is_curated_and_the_others_are_not(tmp_path):
    rows = filler_rows(60)
    rows += [[f"What are the signs of disease {g}?", f"What are the signs of disease {g}? Boilerplate table for {g}.",
              f"Disease {g}", "u"] for g in range(60)]
    rows += [[f"What causes disease {g}?", f"What causes disease {g}? A virus causes disease {g}.", f"Disease {g}",
              "u"] for g in range(60)]
    path = write_csv(tmp_path / "qa.csv", csv_text(["question", "answer", "focus", "url"], rows))
    plain, curated = run(path, tmp_path / "a"), run(path, tmp_path / "b", drop_train_answers=("Boilerplate table",))
    assert plain != curated and manifest(curated)["config"]["drop_train_answers"] == ["Boilerplate table"]
    before, after = all_records(plain), all_records(curated)
    assert after["valid"] == before["valid"] and after["test"] == before["test"]
    answers = [assistant_text(r) for r in after["train"]]
    dropped = sum("Boilerplate" in assistant_text(r) for r in before["train"])
    assert dropped > 0 and manifest(curated)["counts"]["dropped_from_train"] == dropped
    assert len(answers) == len(before["train"]) - dropped and not any("Boilerplate" in a for a in answers)
    causes = [a for a in answers if "virus" in a]
    assert causes and all(a.startswith("A virus causes disease") for a in causes)  # the repeated question is cut
    assert "dropped_from_train" not in manifest(plain)["counts"]  # and an uncurated split keeps its id


def test_validation_records_are_curated_the_way_the_training_rows_are(tmp_path):
    rows = [[f"What are the signs of disease {g}?", f"What are the signs of disease {g}? Boilerplate table for {g}.",
             f"Disease {g}", "u"] for g in range(40)]
    rows += [[f"What causes disease {g}?", f"What causes disease {g}? A virus causes disease {g}.", f"Disease {g}",
              "u"] for g in range(40)]
    path = write_csv(tmp_path / "qa.csv", csv_text(["question", "answer", "focus", "url"], rows))
    plain = all_records(run(path, tmp_path / "a"))
    curated = all_records(run(path, tmp_path / "b", drop_train_answers=("Boilerplate table",)))
    as_records = data.curate_records(plain["train"], ("Boilerplate table",))
    assert as_records == curated["train"]  # the records' curation is the training split's, row for row
    valid = data.curate_records(plain["valid"], ("Boilerplate table",))
    assert valid and len(valid) < len(plain["valid"])
    assert all(assistant_text(r).startswith("A virus causes disease") for r in valid)
    assert data.curate_records(plain["valid"], ()) is plain["valid"]  # nothing to drop: the records as they are


def test_the_manifest_of_a_curated_split_is_found_without_preparing_it(tmp_path):
    cfg = DataConfig(csv=str(write_csv(tmp_path / "qa.csv", csv_text(["question", "answer", "focus", "url"], filler_rows(30)))),
                     seed=0, system_prompt=None, drop_train_answers=["Nothing matches this"], **FRACTIONS)
    assert data.prepared_manifest(cfg, tmp_path / "processed") is None
    folder = prepare_from_config(cfg, tmp_path / "processed")
    assert data.prepared_manifest(cfg, tmp_path / "processed") == manifest(folder)


def test_an_invalid_drop_pattern_is_one_line_naming_the_fix(tmp_path):
    with pytest.raises(ValueError, match="invalid regular expression .*fix: escape it"):
        DataConfig(csv=None, seed=0, system_prompt=None, drop_train_answers=["What(?"], **FRACTIONS)
