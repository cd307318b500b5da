"""Every config group composes and validates; bad values fail once, listing every problem with its fix."""

from __future__ import annotations

import pytest

from medlora.config import compose, load_run_config, to_run_config
from medlora.config.workspace import PACKAGED_CONF as CONF_DIR
from medlora.errors import UserError


@pytest.mark.parametrize("model", sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml")))
def test_every_model_config_validates(model):
    cfg = load_run_config([f"model={model}"])
    assert cfg.model.name == model


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml")))
def test_every_experiment_config_validates(experiment):
    cfg = load_run_config([f"experiment={experiment}"])
    assert cfg.raw["run_name"] == experiment


def test_seed_baseline_reproduces_the_original_settings():
    cfg = load_run_config(["experiment=seed_baseline"])
    assert (cfg.train.batch_size, cfg.lora.num_layers, cfg.train.learning_rate, cfg.train.iters, cfg.lora.rank) == (
        1, 4, 1e-5, 600, 8)


def test_overrides_become_typed_values(tmp_path):
    cfg = load_run_config(["train.learning_rate=3e-4", "lora.rank=16", f"paths.mlruns={tmp_path}"])
    assert cfg.train.learning_rate == pytest.approx(3e-4) and isinstance(cfg.train.learning_rate, float)
    assert cfg.lora.rank == 16
    assert cfg.paths.tracking_uri == f"sqlite:///{tmp_path.resolve()}/mlflow.db"


def test_all_problems_are_reported_at_once():
    with pytest.raises(UserError) as err:
        load_run_config(["train.batch_size=0", "train.learning_rate=2.0", "lora.dropout=1.5"])
    message = str(err.value)
    assert "\n" not in message
    for key in ("train.batch_size=0", "train.learning_rate=2.0", "lora.dropout=1.5"):
        assert key in message
    assert message.count("fix:") == 3


@pytest.mark.parametrize(
    "override, needle",
    [
        ("train.bogus=1", "train.bogus"),
        ("model=nonexistent", "nonexistent"),
        ("train.batch_size=four", "batch_size"),
    ],
)
def test_wrong_overrides_are_user_errors(override, needle):
    with pytest.raises(UserError, match=needle):
        to_run_config(compose([override]))


def test_eval_interval_longer_than_the_run_is_rejected():
    with pytest.raises(UserError, match="steps_per_eval"):
        load_run_config(["train.iters=10", "train.steps_per_eval=50"])
