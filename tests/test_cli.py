"""The command line: help that teaches, one-line errors with exit code 2, nothing written on failure."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import medlora
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


def test_init_makes_a_workspace_once(tmp_path, capsys):
    assert main(["init", str(tmp_path / "work")]) == 0
    assert (tmp_path / "work" / ".medlora").is_file()
    example = (tmp_path / "work" / "conf" / "experiment" / "my_experiment.yaml").read_text()
    assert "medlora train experiment=my_experiment" in example
    before = sorted(p.name for p in (tmp_path / "work").rglob("*"))
    assert main(["init", str(tmp_path / "work")]) == 2
    assert "already a medlora workspace" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "work").rglob("*")) == before


def test_the_workspace_is_found_from_a_sub_folder_and_its_configs_come_first(tmp_path, monkeypatch, capsys):
    assert main(["init", str(tmp_path / "work")]) == 0
    (tmp_path / "work" / "conf" / "train").mkdir()
    (tmp_path / "work" / "conf" / "train" / "default.yaml").write_text(
        (Path(medlora.__file__).parent / "conf" / "train" / "default.yaml").read_text().replace("iters: 100", "iters: 70"))
    (tmp_path / "work" / "deep" / "er").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "work" / "deep" / "er")
    capsys.readouterr()
    assert main(["train", "--cfg"]) == 0
    out = capsys.readouterr().out
    assert "iters: 70" in out  # the workspace's own train/default.yaml replaced the packaged one
    from medlora.config import load_run_config

    assert load_run_config().paths.mlruns == tmp_path / "work" / "mlruns"  # relative paths are the workspace's
