"""End-to-end LoRA runs on the tiny random model, read back from MLflow with MlflowClient."""

from __future__ import annotations

import json
import math
from pathlib import Path

import mlx.core as mx
import pytest
from conftest import isolated_overrides
from mlflow.tracking import MlflowClient
from mlx.utils import tree_flatten
from mlx_lm.utils import load

from medlora import tracking
from medlora.models import load as models
from medlora.errors import UserError
from medlora.config import load_run_config
from medlora.training.run import train


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, model_cache, small_csv):
    overrides = isolated_overrides(tmp_path_factory.mktemp("run"), model_cache, small_csv)
    cfg = load_run_config(overrides + ["run_name=e2e"])
    result = train(cfg)
    tracking.connect(cfg.paths)
    return cfg, result, MlflowClient()


def test_run_records_everything(finished_run, tmp_path):
    cfg, result, client = finished_run
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.info.artifact_uri.startswith((cfg.paths.mlruns.resolve() / "artifacts").as_uri())

    # params: the key settings a person compares (the whole config is config.yaml), the BLAS, the model's size
    assert run.data.params["train.batch_size"] == "2"
    assert run.data.params["lora.rank"] == str(cfg.lora.rank)
    assert run.data.params["model.name"] == "tiny_random"
    assert run.data.params["train.learning_rate"] == str(cfg.train.learning_rate)
    assert "blas" in run.data.params and int(run.data.params["model_parameters"]) > 3_000_000
    assert not [k for k in run.data.params if k.startswith(("ask.", "evaluate.", "paths.", "generation."))]
    assert len(run.data.params) < 30

    # metrics by iteration; the constant learning rate is a param, not a flat-line chart
    for key in ("train_loss", "val_loss", "best_val_loss", "tokens_per_second", "peak_memory_gb"):
        assert client.get_metric_history(result.run_id, key), key
    assert not client.get_metric_history(result.run_id, "learning_rate")
    val = client.get_metric_history(result.run_id, "val_loss")
    assert [m.step for m in val] == [0, 3, 7, 11]  # mlx-lm reports the eval before step `it` as it - 1
    best = client.get_metric_history(result.run_id, "best_val_loss")  # the running minimum after iteration 0
    assert [m.step for m in best] == [3, 7, 11]
    assert [m.value for m in best] == [min(v.value for v in val[1:i + 2]) for i in range(3)]
    assert run.data.metrics["best_val_loss"] == round(result.best_val_loss, 4)  # 4 decimals: shown whole in the UI
    for key in ("run_seconds", "median_tokens_per_second", "peak_rss_gb"):
        assert run.data.metrics[key] > 0, key
    assert run.data.tags["outcome"] == "complete"
    train_steps = [m.step for m in client.get_metric_history(result.run_id, "train_loss")]
    assert train_steps == [4, 8, 12]
    assert all(m.value > 0 for m in client.get_metric_history(result.run_id, "peak_memory_gb"))

    artifacts = {a.path for a in client.list_artifacts(result.run_id)}
    assert {"config.yaml", "samples.json", "samples.html", "loss_curve.png", "adapters"} <= artifacts
    adapters = {a.path for a in client.list_artifacts(result.run_id, "adapters/best")}
    assert adapters == {"adapters/best/adapter_config.json", "adapters/best/adapters.safetensors"}
    final = {a.path for a in client.list_artifacts(result.run_id, "adapters/final")}
    assert final == {"adapters/final/adapter_config.json", "adapters/final/adapters.safetensors"}

    # samples: one row per probe question per evaluation
    samples = json.loads(Path(client.download_artifacts(result.run_id, "samples.json", str(tmp_path))).read_text())
    rows = [dict(zip(samples["columns"], r)) for r in samples["data"]]
    assert len(rows) == len(cfg.probes.questions) * len(val)
    assert {r["question"] for r in rows} == set(cfg.probes.questions)
    assert sorted({r["iteration"] for r in rows}) == [0, 3, 7, 11]
    # ... and as a page MLflow renders: every answer whole, one evaluation after another
    page = Path(client.download_artifacts(result.run_id, "samples.html", str(tmp_path))).read_text()
    import html

    assert [page.index(f"<h2>Iteration {i} ") for i in (0, 3, 7, 11)] == sorted(
        page.index(f"<h2>Iteration {i} ") for i in (0, 3, 7, 11))
    for r in rows:
        assert html.escape(r["answer"]) in page


def test_best_adapter_is_the_lowest_val_loss_and_loads(finished_run, tmp_path):
    cfg, result, client = finished_run
    val = {m.step: m.value for m in client.get_metric_history(result.run_id, "val_loss")}  # logged to 4 decimals
    assert round(result.best_val_loss, 4) == min(v for step, v in val.items() if step > 0)  # step 0: the base model
    assert val[result.best_iteration] == round(result.best_val_loss, 4)
    assert round(result.first_val_loss, 4) == val[0]

    best_dir = client.download_artifacts(result.run_id, "adapters/best", str(tmp_path))
    meta = json.loads((Path(best_dir) / "adapter_config.json").read_text())
    assert meta["iteration"] == result.best_iteration and meta["fine_tune_type"] == "lora"

    model, _ = load(models.model_path(cfg.model, cfg.paths.models), adapter_path=best_dir)
    lora_b = [v for k, v in tree_flatten(model.parameters()) if k.endswith("lora_b")]
    assert lora_b and any(mx.abs(v).sum().item() > 0 for v in lora_b)  # trained, not the zero init


def test_training_lowers_validation_loss(finished_run):
    _, result, _ = finished_run
    assert result.final_val_loss < result.first_val_loss


def test_failed_run_is_marked_failed_with_the_error(tiny_overrides, monkeypatch):
    import medlora.training.run as train_module

    def broken_trainer(*args, **kwargs):
        raise RuntimeError("disk full while training")

    monkeypatch.setattr(train_module, "mlx_train", broken_trainer)
    cfg = load_run_config(tiny_overrides)
    with pytest.raises(RuntimeError, match="disk full"):
        train(cfg)
    tracking.connect(cfg.paths)
    client = MlflowClient()
    exp = client.get_experiment_by_name(cfg.experiment_name)
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FAILED" and run.data.tags["outcome"] == "failed"
    assert "disk full while training" in run.data.tags["error"]
    assert "run_seconds" in run.data.metrics  # what was measured before the failure is kept


def test_bad_input_fails_before_any_run_is_recorded(tiny_overrides):
    cfg = load_run_config(tiny_overrides + ["lora.num_layers=50"])
    with pytest.raises(UserError, match="lora.num_layers=50"):
        train(cfg)
    assert not cfg.paths.mlruns.exists()


def test_the_unmeasured_first_evaluation_is_not_printed(tiny_overrides, capfd):
    """train.validate_base=false: mlx-lm's first evaluation sees one example and is not used; its progress table
    shows only the evaluations that are (a one-example loss there read as validation loss rising)."""
    result = train(load_run_config(tiny_overrides + ["train.validate_base=false"]))
    printed = capfd.readouterr()
    assert "\x1b[" not in printed.out + printed.err  # a pipe gets the table as plain text, not mlx-lm's colours
    rows = [line.split() for line in printed.out.splitlines()]
    val_rows = [int(row[0]) for row in rows if len(row) > 2 and row[0].isdigit() and row[1] == "val"]
    assert val_rows == [4, 8, 12] and math.isnan(result.first_val_loss)
