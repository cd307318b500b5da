"""Read a question/answer CSV and clean it: the first step of ``medlora prepare``.

Any CSV with ``question`` and ``answer`` columns (plain or gzip, UTF-8, BOM and CRLF welcome)
is read as a table of strings; whitespace is collapsed, blank rows and exact duplicates are
dropped. Every problem with the file is one :class:`UserError` naming the fix.
This module must not import mlx.
"""

from __future__ import annotations

import gzip
import io
import zlib
from pathlib import Path

import pandas as pd

from medlora.errors import UserError

EXTRA_KEYS = ("focus", "url")  # kept in each record when the CSV has them
PACKAGED_CSV = Path(__file__).resolve().parent / "medquad.csv.gz"  # MedQuAD, CC BY 4.0 (README.md here)
_FIX_CSV = "fix: save it as a comma-separated UTF-8 CSV whose header row names the columns question,answer"


# ---------------------------------------------------------------- reading


MAX_FIELD_CHARS = 200_000  # a question or answer longer than this is a broken file, not a long answer


def read_bytes(csv_path: Path) -> bytes:
    if not csv_path.exists():
        raise UserError(f"data file not found: {csv_path} (fix: pass data.csv=path/to/file.csv)")
    if not csv_path.is_file():
        raise UserError(f"data file is not a file: {csv_path} (fix: pass data.csv=path/to/file.csv)")
    return csv_path.read_bytes()


def parse(raw: bytes, csv_path: Path) -> pd.DataFrame:
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


def clean(table: pd.DataFrame, csv_path: Path) -> tuple[pd.DataFrame, dict]:
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
