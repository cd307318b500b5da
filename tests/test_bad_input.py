"""The bad-input corpus: every case exits 2 with one line naming the problem and its fix, and writes nothing.

Each case runs the real command line (``medlora.cli.main``) with every output folder (the MLflow
store, the study outputs, the prepared splits) under one fresh root; the root is compared before
and after, so a command that prepares a split before it fails is caught. Only the converted-model
cache, which valid runs share, lives outside that root. Cases that need a state (a store, a
study, a champion) build it before the snapshot.
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
    "unknown_truncation": (["train", "train.truncation=words"], "train.truncation=sentence, open or hard"),
    "bad_fractions": (["prepare", "data.train_fraction=0.9"], "fractions"),
    "too_many_layers": (["train", "lora.num_layers=99"], "lora.num_layers=99"),
    "empty_search_space": (["sweep", "study.search_space=null"], "search_space is empty"),
    "unknown_search_key": (["sweep", "+study.search_space.train.nope={type: int, low: 1, high: 2}"], "train.nope"),
    "inverted_range": (["sweep", "study.search_space.lora.num_layers.low=10", "study.search_space.lora.num_layers.high=4"],
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
    # kinds added with issue 14
    "float_not_a_number": (["train", "train.learning_rate=fast"], "train.learning_rate=fast"),
    "int_given_a_fraction": (["train", "train.iters=10.5"], "train.iters=10.5"),
    "bool_given_no": (["train", "train.mask_prompt=no"], "train.mask_prompt=true or"),
    "empty_study_name": (["sweep", "study.name="], "study.name"),
    "study_name_is_a_path": (["sweep", "study.name=../../elsewhere"], "plain name"),
    "experiment_name_is_absolute": (["train", "experiment_name=/elsewhere"], "plain name"),
    "hub_model_missing": (["train", "model=gemma_2b_quantized", "model.hub_repo=nobody/no-such-model"],
                          "hugging face hub"),
    "batch_zero_in_search_space": (["sweep", "study=tiny", "study.search_space.train.batch_size.choices=[0,2]"],
                                   "can propose 0"),
    "iters_below_eval_in_space": (["sweep", "study=tiny", "study.search_space.train.iters.low=2"], "can propose 2"),
    "fidelity_and_iters_searched": (["sweep", "+study.search_space.train.iters={type: int, low: 50, high: 100}"],
                                    "study.fidelity sets each trial's train.iters"),
    "rungs_not_whole": (["sweep", "study.fidelity.max_examples=100"], "not divisible"),
    "tracking_server_down": (["ask", "What is glaucoma?", "paths.mlflow_server=http://127.0.0.1:9"],
                             "does not answer"),
    "evaluate_without_champion": (["evaluate"], "no champion"),
    "grace_below_heartbeat": (["sweep", "study.grace_seconds=5"], "study.grace_seconds"),
    "threshold_without_upper": (["sweep", "study.pruner.name=threshold"], "study.pruner.upper"),
    "unknown_evaluate_row": (["evaluate", "evaluate.rows=[base,gpt]"], "evaluate.rows"),
    "top_p_zero": (["ask", "What is glaucoma?", "generation.top_p=0"], "generation.top_p"),
    "unsupported_storage": (["sweep", "study=tiny", "study.storage=mongodb://db/x"], "cannot open the study storage"),
    "data_csv_is_a_folder": (["prepare", "data.csv={root}"], "not a file"),
    "output_under_a_file": (["train", "paths.experiments={root}/inputs/afile/experiments"], "is a file"),
    "missing_from_file": (["train", "--from", "{root}/nope.yaml"], "cannot read overrides"),
    # kinds added with issue 16
    "promote_run_without_store": (["promote", "--run", "0" * 32], "no MLflow store"),
    "serve_without_champion": (["serve"], "no champion"),
    "serve_port_out_of_range": (["serve", "serve.port=70000"], "serve.port=70000"),
    "serve_unknown_adapter": (["serve", "--run", "nonsense"], "is not 'champion'"),
    "export_without_champion": (["export"], "no champion"),
    "export_unknown_gguf": (["export", "export.gguf=q4"], "export.gguf=q4"),
    # issue 12
    "unknown_questions_set": (["evaluate", "evaluate.questions_set=people"], "evaluate.questions_set=people"),
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


def base_overrides(root: Path, model_cache: Path, csv: str) -> list[str]:
    return ["model=tiny_random", "lora.num_layers=-1", f"data.csv={csv}", f"paths.mlruns={root / 'mlruns'}",
            f"paths.experiments={root / 'experiments'}", f"paths.processed={root / 'processed'}",
            f"paths.models={model_cache}"]


@pytest.mark.parametrize("case", sorted(CSV_CASES))
@pytest.mark.parametrize("command", ["prepare", "train"])
def test_malformed_csv(case, command, root, model_cache, capsys):
    content, needle = CSV_CASES[case]
    csv = write(root, f"{case}.csv", content)
    argv = [command, *base_overrides(root, model_cache, csv)]
    line = run_case(argv, root, capsys)
    assert needle.lower() in line.lower(), line


@pytest.mark.parametrize("case", sorted(OVERRIDE_CASES))
def test_bad_override_or_state(case, root, model_cache, small_csv, capsys):
    argv, needle = OVERRIDE_CASES[case]
    write(root, "afile", "not a folder")
    command, *rest = [a.replace("{root}", str(root)) for a in argv]
    extra = [a for a in rest if "=" in a]
    positional = [a for a in rest if "=" not in a]
    full = [command, *positional, *base_overrides(root, model_cache, str(small_csv)), *extra]
    line = run_case(full, root, capsys)
    assert needle.lower() in line.lower(), line


def _study_without_its_runs(root: Path, overrides: list[str]) -> list[str]:
    """A study whose best trial names a run the (existing) MLflow store does not have."""
    import optuna

    from medlora import tracking
    from medlora.config import compose, load_run_config, to_study_config
    from medlora.study.storage import load_study

    overrides = [*overrides, "study=tiny"]
    tracking.connect(load_run_config(overrides).paths)
    study = load_study(to_study_config(compose(overrides)))
    trial = study.ask()
    trial.set_user_attr("run_id", "0" * 32)
    trial.set_user_attr("state", "COMPLETE")
    study.tell(trial, 1.0)
    assert study.trials[0].state == optuna.trial.TrialState.COMPLETE
    return ["promote", *overrides]


def _champion_with_a_truncated_adapter(root: Path, overrides: list[str]) -> list[str]:
    from mlflow.tracking import MlflowClient

    from medlora import tracking
    from medlora.config import load_run_config

    folder = root / "inputs" / "adapter"
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text('{"fine_tune_type": "lora"}')
    (folder / "adapters.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{")  # cut short
    tracking.connect(load_run_config(overrides).paths)
    client = MlflowClient()
    client.create_registered_model("medlora-tiny_random")
    version = client.create_model_version("medlora-tiny_random", source=folder.as_uri())
    client.set_registered_model_alias("medlora-tiny_random", "champion", version.version)
    return ["ask", "What is glaucoma?", *overrides]


def _study_resumed_with_another_space(root: Path, overrides: list[str]) -> list[str]:
    from medlora.config import compose, to_study_config
    from medlora.study.space import distribution
    from medlora.study.storage import load_study

    study_cfg = to_study_config(compose([*overrides, "study=tiny"]))
    study = load_study(study_cfg)
    trial = study.ask({spec.key: distribution(spec) for spec in study_cfg.search_space})
    study.tell(trial, 1.0)
    return ["sweep", *overrides, "study=tiny", "study.search_space.train.batch_size.choices=[1,2]"]


STATE_CASES = {
    "promote_with_a_store_lacking_the_runs": (_study_without_its_runs, "has no run of study"),
    "ask_with_a_truncated_champion": (_champion_with_a_truncated_adapter, "missing or corrupt"),
    "resume_with_another_search_space": (_study_resumed_with_another_space, "another search space"),
}


@pytest.mark.parametrize("case", sorted(STATE_CASES))
def test_bad_state(case, root, model_cache, small_csv, capsys):
    make, needle = STATE_CASES[case]
    argv = make(root, base_overrides(root, model_cache, str(small_csv)))
    line = run_case(argv, root, capsys)
    assert needle.lower() in line.lower(), line


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
