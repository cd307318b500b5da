"""Shared fixtures. ``import medlora`` loads the optimized BLAS before anything imports mlx (medlora.models.blas)."""

from __future__ import annotations

import gzip
from pathlib import Path

import medlora  # noqa: F401  (first: it loads the optimized BLAS before mlx)

import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from medlora.data.csv_input import PACKAGED_CSV  # noqa: E402


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> Path:
    """One converted-model cache for the whole session (the tiny model builds once)."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def small_csv(tmp_path_factory) -> Path:
    """400 MedQuAD rows (enough focus groups for a grouped split), gzipped like the real file."""
    frame = pd.read_csv(PACKAGED_CSV, nrows=400)
    path = tmp_path_factory.mktemp("csv") / "small.csv.gz"
    with gzip.open(path, "wt", encoding="utf-8", newline="") as f:
        frame.to_csv(f, index=False)
    return path


@pytest.fixture(scope="session")
def default_processed(tmp_path_factory) -> Path:
    """A ``paths.processed`` folder for the default data config: the packaged MedQuAD, split once (~4 s)."""
    return tmp_path_factory.mktemp("processed")


def isolated_overrides(root: Path, model_cache: Path, csv: Path) -> list[str]:
    """Hydra overrides for a fast run: tiny model, small data, every output under ``root``."""
    return [
        "model=tiny_random",
        "lora.num_layers=-1",
        f"data.csv={csv}",
        f"paths.mlruns={root / 'mlruns'}",
        f"paths.experiments={root / 'experiments'}",
        f"paths.processed={root / 'processed'}",
        f"paths.models={model_cache}",
        "train.batch_size=2",
        "train.iters=12",
        "train.steps_per_eval=4",
        "train.steps_per_report=4",
        "train.max_seq_length=64",
        "train.val_examples=4",
        "train.eval_batch_size=4",
        "train.learning_rate=1e-2",
        "probes.max_tokens=4",
    ]


@pytest.fixture
def tiny_overrides(tmp_path, model_cache, small_csv) -> list[str]:
    return isolated_overrides(tmp_path, model_cache, small_csv)
