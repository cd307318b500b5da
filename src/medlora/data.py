"""Turn a question/answer CSV into train/valid/test chat JSONL files for mlx-lm.

``prepare`` reads any CSV with ``question`` and ``answer`` columns (plain or gzip,
UTF-8, BOM and CRLF welcome), cleans it, drops exact duplicates, splits it by
group so one disease (``focus``) never appears in two splits, and writes

    processed_root/<split_id>/{train,valid,test}.jsonl + manifest.json

The split id hashes the input bytes and every argument, so the folder is a pure
function of them: a second call finds it and returns at once. The folder is built
in a temporary sibling and renamed into place, so a failure leaves nothing behind.
Every problem with the input is raised as one-line :class:`UserError`.
This module must not import mlx.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from medlora.config import DataConfig
from medlora.errors import UserError
from medlora.faults import kill_point

FORMAT_VERSION = 1  # bump when the output of the same input changes
SPLITS = ("train", "valid", "test")
EXTRA_KEYS = ("focus", "url")  # kept in each record when the CSV has them
_FIX_CSV = "fix: save it as a comma-separated UTF-8 CSV whose header row names the columns question,answer"


# ---------------------------------------------------------------- reading


MAX_FIELD_CHARS = 200_000  # a question or answer longer than this is a broken file, not a long answer


def _read_bytes(csv_path: Path) -> bytes:
    if not csv_path.exists():
        raise UserError(f"data file not found: {csv_path} (fix: pass data.csv=path/to/file.csv)")
    if not csv_path.is_file():
        raise UserError(f"data file is not a file: {csv_path} (fix: pass data.csv=path/to/file.csv)")
    return csv_path.read_bytes()


def _parse(raw: bytes, csv_path: Path) -> pd.DataFrame:
    """Bytes -> table of strings (blank cells are ""), with lower-cased column names."""
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise UserError(
                f"data file {csv_path} is a damaged gzip file ({err}) (fix: compress it again or pass the plain CSV)"
            ) from None
    if raw[:4] == b"PK\x03\x04":
        raise UserError(f"data file {csv_path} is a zip archive or spreadsheet, not a CSV ({_FIX_CSV})")
    try:
        text = raw.decode("utf-8-sig")  # drops a UTF-8 byte-order mark
    except UnicodeDecodeError as err:
        raise UserError(
            f"data file {csv_path} is not UTF-8 text (byte 0x{raw[err.start]:02x} at offset {err.start}) "
            "(fix: save it as UTF-8)"
        ) from None
    if not text.strip():
        raise UserError(f"data file {csv_path} is empty ({_FIX_CSV})")
    try:
        table = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"data file {csv_path} is not a readable CSV: {first} ({_FIX_CSV})") from None
    # "Question " and "question" are the same column to a user; the first one wins.
    names: dict[str, str] = {}
    for col in table.columns:
        names.setdefault(str(col).strip().lower(), col)
    for needed in ("question", "answer"):
        if needed not in names:
            found = ", ".join(str(c) for c in table.columns)
            raise UserError(f"data file {csv_path} has no '{needed}' column (found: {found}) ({_FIX_CSV})")
    table = pd.DataFrame({name: table[col] for name, col in names.items()}).fillna("")
    for name in ("question", "answer"):
        longest = table[name].str.len()
        if len(table) and longest.max() > MAX_FIELD_CHARS:
            row = int(longest.idxmax()) + 1  # 1-based data row
            raise UserError(
                f"data file {csv_path} row {row}: the {name} is {int(longest.max()):,} characters, over the "
                f"{MAX_FIELD_CHARS:,} limit (often an unclosed quote swallowing the rest of the file) "
                "(fix: close the quote or split the text; MedQuAD's longest answer is 29,046 characters)"
            )
    return table


# ---------------------------------------------------------------- cleaning


def _clean_text(column: pd.Series) -> pd.Series:
    """Collapse whitespace runs (newlines too) to one space, strip, and write "X ?" as "X?"."""
    return column.map(lambda text: " ".join(text.split()).replace(" ?", "?"))


def _clean(table: pd.DataFrame, csv_path: Path) -> tuple[pd.DataFrame, dict]:
    rows_read = len(table)
    table = table.assign(question=_clean_text(table["question"]), answer=_clean_text(table["answer"]))
    for key in EXTRA_KEYS:
        if key in table:
            table[key] = _clean_text(table[key])
    table = table[(table["question"] != "") & (table["answer"] != "")]
    dropped_blank = rows_read - len(table)
    if table.empty:
        problem = f"all {rows_read} rows have a blank question or answer" if rows_read else "it has a header but no rows"
        raise UserError(
            f"data file {csv_path} has no usable rows: {problem} (fix: fill in the question and answer columns)"
        )
    kept = table.drop_duplicates(subset=["question", "answer"], keep="first").reset_index(drop=True)
    counts = {"rows_read": rows_read, "dropped_blank": dropped_blank, "dropped_duplicates": len(table) - len(kept)}
    return kept, counts


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


def _write_atomically(final: Path, files: dict[str, str]) -> None:
    """Write ``files`` into a temporary folder beside ``final`` and rename it into place."""
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(".tmp-*"):  # left by a killed prepare
        try:
            if time.time() - stale.stat().st_mtime > 3600:
                shutil.rmtree(stale, ignore_errors=True)
        except OSError:
            pass  # removed meanwhile by another process
    if final.exists():  # a folder without a manifest is not ours to keep: rebuild it
        shutil.rmtree(final)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=".tmp-"))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it owner-only
        for name, text in files.items():  # manifest.json last: it marks the folder complete
            with open(tmp / name, "w", encoding="utf-8", newline="\n") as f:
                f.write(text)
        kill_point("prepare")
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / "manifest.json").is_file():  # not a concurrent prepare that won
                raise
            shutil.rmtree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# ---------------------------------------------------------------- public API


def prepare(csv_path: Path, processed_root: Path, *, train_fraction: float, valid_fraction: float,
            test_fraction: float, seed: int, system_prompt: str | None = None) -> Path:
    """Clean, dedupe, grouped split, write chat JSONL. Returns the split folder
    processed_root/<split_id>/ holding train.jsonl, valid.jsonl, test.jsonl, manifest.json.
    Reuses an existing complete folder for the same split_id (no rework)."""
    csv_path, processed_root = Path(csv_path), Path(processed_root)
    fractions = (float(train_fraction), float(valid_fraction), float(test_fraction))
    _check_fractions(*fractions)
    raw = _read_bytes(csv_path)
    input_sha256 = hashlib.sha256(raw).hexdigest()
    config = {"train_fraction": fractions[0], "valid_fraction": fractions[1], "test_fraction": fractions[2],
              "seed": int(seed), "system_prompt": system_prompt}
    identity = json.dumps({"input_sha256": input_sha256, "config": config, "format_version": FORMAT_VERSION},
                          sort_keys=True)
    split_id = hashlib.sha256(identity.encode()).hexdigest()[:12]
    final = processed_root / split_id
    if (final / "manifest.json").is_file():
        return final

    table, counts = _clean(_parse(raw, csv_path), csv_path)
    keys, group_by = _group_keys(table)
    split_of_row, groups_per_split = _assign(keys, fractions, int(seed))
    files, rows_per_split = {}, {}
    for i, name in enumerate(SPLITS):
        part = table[split_of_row == i]  # input order within a split: stable and deterministic
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
    _write_atomically(final, files)
    return final


def prepare_from_config(data_cfg: DataConfig, processed_root: Path) -> Path:
    """``prepare`` with the values of a validated ``DataConfig``."""
    return prepare(data_cfg.csv, processed_root, train_fraction=data_cfg.train_fraction,
                   valid_fraction=data_cfg.valid_fraction, test_fraction=data_cfg.test_fraction,
                   seed=data_cfg.seed, system_prompt=data_cfg.system_prompt)


def load_split(split_dir: Path, name: str) -> list[dict]:
    """Read one split back: a list of {"messages": [...], plus any extra keys}."""
    if name not in SPLITS:
        raise UserError(f"unknown split {name!r} (fix: use one of {', '.join(SPLITS)})")
    path = Path(split_dir) / f"{name}.jsonl"
    if not path.is_file():
        raise UserError(f"split file not found: {path} (fix: prepare the data again)")
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
