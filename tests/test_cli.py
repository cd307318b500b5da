"""The command line: help that teaches, one-line errors with exit code 2, nothing written on failure."""

from __future__ import annotations

import subprocess
import sys

import pytest

from medlora.cli import main


def test_help_lists_commands_and_examples(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for word in ("prepare", "train", "experiment=seed_baseline", "examples"):
        assert word in out


def test_cfg_prints_the_composed_config(capsys):
    assert main(["train", "--cfg", "train.iters=7"]) == 0
    assert "iters: 7" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["train", "train.nope=1"], "train.nope"),
        (["train", "train.batch_size=0"], "train.batch_size=0"),
        (["prepare", "data.csv=does/not/exist.csv"], "does/not/exist.csv"),
    ],
)
def test_user_errors_exit_2_with_one_line(argv, needle, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "medlora.cli", *argv], capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("medlora: error:") and needle in lines[0] and "fix" in lines[0]
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_prepare_prints_the_split_folder(tmp_path, small_csv, capsys):
    assert main(["prepare", f"data.csv={small_csv}", f"paths.processed={tmp_path}"]) == 0
    split_dir = capsys.readouterr().out.strip()
    assert split_dir.startswith(str(tmp_path))
    assert {"train.jsonl", "valid.jsonl", "test.jsonl", "manifest.json"} <= {p.name for p in tmp_path.joinpath(split_dir).iterdir()}
