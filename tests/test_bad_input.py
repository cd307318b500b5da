"""The bad-input corpus: every case exits 2 with one line naming the problem and its fix, and writes nothing.

Each case runs the real command line (``medlora.cli.main``) with every output folder under one
fresh root; the root is compared before and after. Caches that valid runs share (converted
models, prepared splits of the good test CSV) live outside that root.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest

from medlora.cli import main

GOOD = "question,answer,focus\nWhat is A?,A is a thing.,A\nWhat is B?,B is another thing.,B\n"


def write(root: Path, name: str, content: bytes | str) -> str:
    path = root / "inputs" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return str(path)


CSV_CASES = {
    # name: (file content, words the error must contain)
    "no_header": ("What is A?,A is a thing.\nWhat is B?,B is another.\n", "no 'question' column"),
    "wrong_columns": ("prompt,completion\nhi,there\n", "no 'question' column"),
    "missing_answer": ("question,focus\nWhat is A?,A\n", "no 'answer' column"),
    "empty": ("", "empty"),
    "header_only": ("question,answer\n", "no usable rows"),
    "only_blanks": ("question,answer\n , \n,\n\t,  \n", "no usable rows"),
    "undecodable": ("question,answer\nWhat is caf\xe9?,x\n".encode("latin-1"), "UTF-8"),
    "huge_field": ("question,answer\nWhat is A?," + "x" * 300_000 + "\n", "over the"),
    "unclosed_quote": ('question,answer\nWhat is A?,"never closed\nWhat is B?,B\n', "not a readable CSV"),
    "crlf_only_blanks": ("question,answer\r\n,\r\n , \r\n", "no usable rows"),
    "bom_wrong_columns": ("\ufeffprompt,completion\nhi,there\n", "no 'question' column"),
    "zip_file": (b"PK\x03\x04" + b"\x00" * 40, "zip"),
    "truncated_gzip": (gzip.compress(GOOD.encode())[:20], "gzip"),
    "binary_noise": (bytes(range(256)) * 4, "UTF-8"),
}

OVERRIDE_CASES = {
    "unknown_key": (["train", "train.bogus=1"], "train.bogus"),
    "unknown_group_option": (["train", "model=gpt5"], "gpt5"),
    "zero_batch": (["train", "train.batch_size=0"], "train.batch_size=0"),
    "negative_batch": (["train", "train.batch_size=-4"], "train.batch_size=-4"),
    "string_batch": (["train", "train.batch_size=four"], "batch_size"),
    "lr_zero": (["train", "train.learning_rate=0"], "train.learning_rate=0"),
    "lr_too_big": (["train", "train.learning_rate=3.0"], "train.learning_rate=3.0"),
    "iters_below_eval": (["train", "train.iters=5", "train.steps_per_eval=50"], "steps_per_eval"),
    "dropout_one": (["train", "lora.dropout=1.0"], "lora.dropout"),
    "unknown_truncation": (["train", "train.truncation=words"], "train.truncation=sentence or hard"),
    "bad_fractions": (["prepare", "data.train_fraction=0.9"], "fractions"),
    "too_many_layers": (["train", "lora.num_layers=99"], "lora.num_layers=99"),
    "empty_search_space": (["sweep", "study.search_space=null"], "search_space is empty"),
    "unknown_search_key": (["sweep", "+study.search_space.train.nope={type: int, low: 1, high: 2}"], "train.nope"),
    "inverted_range": (["sweep", "study.search_space.train.iters.low=50", "study.search_space.train.iters.high=10"],
                       "low <= high"),
    "log_scale_zero": (["sweep", "study.search_space.train.learning_rate.low=0"], "log scale"),
    "empty_choices": (["sweep", "study.search_space.train.batch_size.choices=[]"], "choices"),
    "zero_trials": (["sweep", "study.n_trials=0"], "study.n_trials=0"),
    "negative_cap": (["sweep", "study.memory_cap_gb=-1"], "memory_cap_gb"),
    "unknown_pruner": (["sweep", "study.pruner.name=hyperband"], "hyperband"),
    "zero_min_trials": (["sweep", "study.pruner.n_min_trials=0"], "study.pruner.n_min_trials=0"),
    "cap_below_model": (["sweep", "study=tiny", "study.memory_cap_gb=0.001"], "smaller than the model itself"),
    "search_layers_beyond_model": (["sweep", "study=tiny", "study.search_space.lora.num_layers.high=9"],
                                   "has 2 layers"),
    "unreachable_storage": (["sweep", "study=tiny", "study.storage=postgresql://nobody@127.0.0.1:9/none"],
                            "cannot open the study storage"),
    "report_unknown_study": (["report", "study.name=never_ran"], "no study named"),
    "promote_unknown_study": (["promote", "study.name=never_ran"], "no study named"),
    "rollback_without_store": (["promote", "--rollback"], "no MLflow store"),
    "ask_without_champion": (["ask", "What is glaucoma?"], "no champion"),
    "negative_sources": (["ask", "What is glaucoma?", "ask.sources=-1"], "ask.sources"),
    "promote_run_without_store": (["promote", "--run", "0" * 32], "no MLflow store"),
    "serve_without_champion": (["serve"], "no champion"),
    "serve_port_out_of_range": (["serve", "serve.port=70000"], "serve.port=70000"),
    "serve_unknown_adapter": (["serve", "--run", "nonsense"], "is not 'champion'"),
    "export_without_champion": (["export"], "no champion"),
    "export_unknown_gguf": (["export", "export.gguf=q4"], "export.gguf=q4"),
}


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob("*") if "inputs" not in p.parts}


def run_case(argv, root: Path, capsys) -> str:
    before = snapshot(root)
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert err, "no error printed"
    assert snapshot(root) == before, "something was written"
    line = err[-1]
    assert line.startswith("medlora: error:") and "fix" in line
    return line


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def base_overrides(root: Path, model_cache: Path, processed: Path, csv: str) -> list[str]:
    return ["model=tiny_random", "lora.num_layers=-1", f"data.csv={csv}", f"paths.mlruns={root / 'mlruns'}",
            f"paths.experiments={root / 'experiments'}", f"paths.processed={processed}",
            f"paths.models={model_cache}"]


@pytest.fixture(scope="module")
def shared_processed(tmp_path_factory):
    return tmp_path_factory.mktemp("processed")


@pytest.mark.parametrize("case", sorted(CSV_CASES))
@pytest.mark.parametrize("command", ["prepare", "train"])
def test_malformed_csv(case, command, root, model_cache, capsys):
    content, needle = CSV_CASES[case]
    csv = write(root, f"{case}.csv", content)
    argv = [command, *base_overrides(root, model_cache, root / "processed", csv)]
    line = run_case(argv, root, capsys)
    assert needle.lower() in line.lower(), line
    assert not (root / "processed").exists()


@pytest.mark.parametrize("case", sorted(OVERRIDE_CASES))
def test_bad_override_or_state(case, root, model_cache, small_csv, shared_processed, capsys):
    argv, needle = OVERRIDE_CASES[case]
    command, *rest = argv
    extra = [a for a in rest if "=" in a]
    positional = [a for a in rest if "=" not in a]
    full = [command, *positional, *base_overrides(root, model_cache, shared_processed, str(small_csv)), *extra]
    line = run_case(full, root, capsys)
    assert needle.lower() in line.lower(), line


def test_corpus_has_at_least_thirty_cases():
    assert len(CSV_CASES) * 2 + len(OVERRIDE_CASES) >= 30


def test_missing_or_corrupt_adapter_is_refused_before_the_alias_moves(tmp_path):
    from medlora.errors import UserError
    from medlora.registry.promote import check_adapter

    folder = tmp_path / "adapter"
    folder.mkdir()
    with pytest.raises(UserError, match="missing or corrupt"):
        check_adapter(folder.as_uri())
    (folder / "adapter_config.json").write_text('{"fine_tune_type": "lora"}')
    (folder / "adapters.safetensors").write_bytes(os.urandom(64))
    with pytest.raises(UserError, match="missing or corrupt"):
        check_adapter(folder.as_uri())
