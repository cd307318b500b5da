"""Split a cleaned question/answer table by group and write chat JSONL files for mlx-lm.

``prepare`` reads the CSV (:mod:`medlora.data.csv_input`), splits it by group so one disease
(``focus``) never appears in two splits, and writes

    processed_root/<split_id>/{train,valid,test}.jsonl + manifest.json

The split id hashes the input bytes and every argument, so the folder is a pure function of
them: a second call finds it and returns at once. The folder is built beside its final name
and renamed into place (:func:`medlora.files.publish_dir`), so a failure leaves nothing behind.
This module must not import mlx.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from medlora.config import DataConfig
from medlora.data.csv_input import EXTRA_KEYS, PACKAGED_CSV, clean, parse, read_bytes
from medlora.errors import UserError
from medlora.files import publish_dir

FORMAT_VERSION = 1  # bump when the output of the same input changes
SPLITS = ("train", "valid", "test")


# ---------------------------------------------------------------- splitting


def _check_fractions(train: float, valid: float, test: float) -> None:
    fractions = (train, valid, test)
    if not (all(0 <= f < 1 for f in fractions) and train > 0 and valid > 0 and abs(sum(fractions) - 1) < 1e-6):
        raise UserError(
            f"data fractions {fractions} must be in [0, 1), train and valid > 0, and sum to 1 "
            "(fix: e.g. data.train_fraction=0.8 data.valid_fraction=0.1 data.test_fraction=0.1)"
        )


def _group_keys(table: pd.DataFrame) -> tuple[pd.Series, str]:
    """One key per row: the normalised focus, or the normalised question where there is none."""
    by_question = "question:" + table["question"].str.lower()
    if "focus" not in table:
        return by_question, "question"
    focus = table["focus"].str.lower()
    return ("focus:" + focus).where(focus != "", by_question), "focus"


def _assign(keys: pd.Series, fractions: tuple[float, float, float], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Shuffle the groups with ``seed`` and lay them end to end; a group goes to the split
    its middle row falls in. Returns (split index per row, group count per split)."""
    groups = sorted(set(keys))  # a fixed order before shuffling
    index = {g: i for i, g in enumerate(groups)}
    group_of_row = np.fromiter((index[k] for k in keys), dtype=np.int64, count=len(keys))
    sizes = np.bincount(group_of_row, minlength=len(groups))
    order = np.random.default_rng(seed).permutation(len(groups))
    ends = np.cumsum(sizes[order])
    middles = (ends - sizes[order] / 2) / ends[-1]
    bounds = [fractions[0], fractions[0] + fractions[1]]
    split_of_group = np.empty(len(groups), dtype=np.int64)
    split_of_group[order] = np.searchsorted(bounds, middles, side="right")
    return split_of_group[group_of_row], np.bincount(split_of_group, minlength=len(SPLITS))


# ---------------------------------------------------------------- writing


def _records(table: pd.DataFrame, system_prompt: str | None) -> list[str]:
    head = [{"role": "system", "content": system_prompt}] if system_prompt is not None else []
    extras = [k for k in EXTRA_KEYS if k in table]
    lines = []
    for row in table[["question", "answer", *extras]].itertuples(index=False):
        record = {"messages": [*head, {"role": "user", "content": row.question},
                               {"role": "assistant", "content": row.answer}]}
        record.update({k: getattr(row, k) or None for k in extras})
        lines.append(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")
    return lines


def _write(final: Path, files: dict[str, str]) -> None:
    """Publish ``files`` as the folder ``final`` (manifest.json last: it marks the folder complete)."""
    if final.exists():  # a folder without a manifest is not ours to keep: rebuild it
        shutil.rmtree(final)

    def fill(tmp: Path) -> None:
        for name, text in files.items():
            with open(tmp / name, "w", encoding="utf-8", newline="\n") as f:
                f.write(text)

    publish_dir(final, fill, marker="manifest.json", kill_at="prepare")


# ---------------------------------------------------------------- public API


def _split_id(raw: bytes, config: dict) -> tuple[str, str]:
    """(split id, input sha256): the id hashes the input bytes, every argument and the format version."""
    input_sha256 = hashlib.sha256(raw).hexdigest()
    identity = json.dumps({"input_sha256": input_sha256, "config": config, "format_version": FORMAT_VERSION},
                          sort_keys=True)
    return hashlib.sha256(identity.encode()).hexdigest()[:12], input_sha256


_ECHO = re.compile(r"^[^.!?]{3,200}\?\s+(?=\S)")


def _curated(answer: str, drop: re.Pattern) -> str | None:
    """The one curation rule: None for an answer ``drop`` matches (MedQuAD: boilerplate with no answer in it),
    else the answer without a leading repeated question ("What are the signs and symptoms of X? ...")."""
    if drop.search(answer):
        return None
    echo = _ECHO.match(answer)
    return answer[echo.end() if echo else 0:].lstrip()


def _drop_pattern(drop_answers: tuple[str, ...]) -> re.Pattern:
    return re.compile("|".join(f"(?:{p})" for p in drop_answers))


def curate_training(part: pd.DataFrame, drop_answers: tuple[str, ...]) -> tuple[pd.DataFrame, int]:
    """The training rows worth learning from (``drop_answers`` non-empty, :func:`_curated`). (rows, dropped)."""
    drop = _drop_pattern(drop_answers)
    answers = [_curated(a, drop) for a in part["answer"]]
    keep = [a is not None for a in answers]
    return part[keep].assign(answer=[a for a in answers if a is not None]), len(keep) - sum(keep)


def curate_records(records: list[dict], drop_answers: tuple[str, ...]) -> list[dict]:
    """:func:`curate_training` for chat records (the answer is the last message): the validation examples runs are
    compared on, curated like the training rows so that validation loss measures what training teaches."""
    if not drop_answers:
        return records
    drop, kept = _drop_pattern(drop_answers), []
    for record in records:
        answer = _curated(record["messages"][-1]["content"], drop)
        if answer is not None:
            last = {**record["messages"][-1], "content": answer}
            kept.append({**record, "messages": [*record["messages"][:-1], last]})
    return kept


def _config(train_fraction: float, valid_fraction: float, test_fraction: float, seed: int,
            system_prompt: str | None, drop_train_answers: tuple[str, ...]) -> dict:
    """The arguments a split id hashes (``drop_train_answers`` only when set, so that older split ids stay the same)."""
    config = {"train_fraction": float(train_fraction), "valid_fraction": float(valid_fraction),
              "test_fraction": float(test_fraction), "seed": int(seed), "system_prompt": system_prompt}
    if drop_train_answers:
        config["drop_train_answers"] = list(drop_train_answers)
    return config


def prepare(csv_path: Path, processed_root: Path, *, train_fraction: float, valid_fraction: float,
            test_fraction: float, seed: int, system_prompt: str | None = None,
            drop_train_answers: tuple[str, ...] = ()) -> Path:
    """Clean, dedupe, grouped split, write chat JSONL. Returns the split folder
    processed_root/<split_id>/ holding train.jsonl, valid.jsonl, test.jsonl, manifest.json.
    Reuses an existing complete folder for the same split_id (no rework)."""
    csv_path, processed_root = Path(csv_path), Path(processed_root)
    fractions = (float(train_fraction), float(valid_fraction), float(test_fraction))
    _check_fractions(*fractions)
    raw = read_bytes(csv_path)
    config = _config(*fractions, seed, system_prompt, drop_train_answers)
    split_id, input_sha256 = _split_id(raw, config)
    final = processed_root / split_id
    if (final / "manifest.json").is_file():
        return final

    table, counts = clean(parse(raw, csv_path), csv_path)
    keys, group_by = _group_keys(table)
    split_of_row, groups_per_split = _assign(keys, fractions, int(seed))
    files, rows_per_split = {}, {}
    for i, name in enumerate(SPLITS):
        part = table[split_of_row == i]  # input order within a split: stable and deterministic
        if name == "train" and drop_train_answers:
            part, counts["dropped_from_train"] = curate_training(part, tuple(drop_train_answers))
        if part.empty and fractions[i] > 0:
            unit = "distinct focus values" if group_by == "focus" else "distinct questions"
            raise UserError(
                f"data file {csv_path} has too few groups for the split: {len(set(keys))} {unit} leave the "
                f"{name} split empty (fix: add more rows or change data.{name}_fraction)"
            )
        files[f"{name}.jsonl"] = "".join(_records(part, system_prompt))
        rows_per_split[name] = len(part)
    manifest = {
        "split_id": split_id,
        "input_file": csv_path.name,
        "input_sha256": input_sha256,
        "config": config,
        "counts": {**counts, "rows": rows_per_split,
                   "groups": {name: int(n) for name, n in zip(SPLITS, groups_per_split)}},
        "group_by": group_by,
        "format_version": FORMAT_VERSION,
    }
    files["manifest.json"] = json.dumps(manifest, ensure_ascii=False, sort_keys=True, indent=2) + "\n"
    _write(final, files)
    return final


def prepare_from_config(data_cfg: DataConfig, processed_root: Path) -> Path:
    """``prepare`` with the values of a validated ``DataConfig`` (no csv: the packaged MedQuAD)."""
    return prepare(data_cfg.csv or PACKAGED_CSV, processed_root, train_fraction=data_cfg.train_fraction,
                   valid_fraction=data_cfg.valid_fraction, test_fraction=data_cfg.test_fraction,
                   seed=data_cfg.seed, system_prompt=data_cfg.system_prompt,
                   drop_train_answers=tuple(data_cfg.drop_train_answers))


def load_split(split_dir: Path, name: str) -> list[dict]:
    """Read one split back: a list of {"messages": [...], plus any extra keys}."""
    if name not in SPLITS:
        raise UserError(f"unknown split {name!r} (fix: use one of {', '.join(SPLITS)})")
    path = Path(split_dir) / f"{name}.jsonl"
    if not path.is_file():
        raise UserError(f"split file not found: {path} (fix: prepare the data again)")
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def prepared_manifest(data_cfg: DataConfig, processed_root: Path) -> dict | None:
    """The manifest of the split ``data_cfg`` prepares, if it has been prepared (never prepares it)."""
    try:
        raw = read_bytes(data_cfg.csv or PACKAGED_CSV)
    except UserError:
        return None
    config = _config(data_cfg.train_fraction, data_cfg.valid_fraction, data_cfg.test_fraction, data_cfg.seed,
                     data_cfg.system_prompt, tuple(data_cfg.drop_train_answers))
    manifest = Path(processed_root) / _split_id(raw, config)[0] / "manifest.json"
    return json.loads(manifest.read_text()) if manifest.is_file() else None
