"""The Python API is an entry point like the CLI: importing medlora gives scripts the same fast BLAS."""

from __future__ import annotations

import subprocess
import sys

import pytest

from medlora.models.blas import blas_in_use


def python(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


needs_openblas = pytest.mark.skipif(not blas_in_use().startswith("openblas"),
                                    reason="no OpenBLAS on this machine (./setup.sh installs it on Debian/Ubuntu)")


@needs_openblas
def test_importing_medlora_loads_the_optimized_blas_for_scripts():
    done = python("import medlora\nfrom medlora.models.blas import blas_in_use\nprint(blas_in_use())")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("openblas:")


@needs_openblas
def test_importing_mlx_first_fails_loudly_instead_of_running_slowly():
    done = python("import mlx.core\nimport medlora")
    assert done.returncode != 0
    assert "ImportError: mlx was imported before medlora" in done.stderr and "fix: import medlora before mlx" in done.stderr


def test_answer_all_triages_then_answers_a_list_of_questions(tiny_overrides, tmp_path):
    """The README's Python lines, with the tiny model and an adapter folder instead of the champion."""
    from medlora.answers.ask import answer_all
    from medlora.answers.safety import CAUTIONS, MESSAGES
    from medlora.config import load_run_config
    from medlora.models.generation import load_with_adapter
    from medlora.models.load import load_model
    from medlora.training.callbacks import save_adapter
    from medlora.training.lora import adapter_config, add_lora

    cfg = load_run_config([*tiny_overrides, "generation.max_tokens=3"])
    model, _ = load_model(cfg.model, cfg.paths.models)
    save_adapter(model, tmp_path / "adapter", adapter_config(cfg, add_lora(model, cfg)))
    model, tokenizer = load_with_adapter(cfg, tmp_path / "adapter")
    answers = answer_all(cfg, ["What is glaucoma?", "I want to kill myself", "What causes gout?",
                               "can i have a few beers with my oxycodone"], model, tokenizer)
    assert answers[1] == MESSAGES["self_harm"]
    assert all(a not in MESSAGES.values() for a in (answers[0], answers[2]))
    assert answers[3].startswith(CAUTIONS["alcohol_mix"] + "\n\n")  # then the (3-token, random) answer
