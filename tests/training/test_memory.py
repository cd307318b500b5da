"""The memory model predicts measured peaks; it is cached per configuration; the guard stops a run over the cap."""

from __future__ import annotations

import json

import mlx.core as mx
import pytest

from medlora.training import memory, memory_guard
from medlora.config import load_run_config


@pytest.fixture(scope="module")
def tiny_cfg(model_cache):
    return load_run_config(["model=tiny_random", f"paths.models={model_cache}", "train.max_seq_length=64",
                            "train.eval_batch_size=4"])


@pytest.mark.parametrize("batch_size, lora_layers", [(4, 1), (8, 2)])
def test_prediction_matches_a_measured_step(tiny_cfg, batch_size, lora_layers):
    model = memory.calibrate(tiny_cfg, max_lora_layers=2)
    predicted = model.predict_gb(batch_size, tiny_cfg.train.max_seq_length, lora_layers) / memory.SAFETY
    measured = max(memory.measure_step_gb(tiny_cfg, batch_size, lora_layers), model.eval_gb)
    assert abs(predicted - measured) / measured < 0.15


def test_calibration_is_cached_and_keyed(tiny_cfg, tmp_path, monkeypatch):
    cache = tmp_path / "memory_model.json"
    first = memory.load_or_calibrate(tiny_cfg, 2, cache)
    assert not cache.exists()  # nothing is written until the caller accepts the calibration
    memory.save(first, cache)
    monkeypatch.setattr(memory, "calibrate", lambda *a: pytest.fail("recalibrated a cached configuration"))
    assert memory.load_or_calibrate(tiny_cfg, 2, cache) == first
    cache.write_text(json.dumps(json.loads(cache.read_text()) | {"key": "another model"}))
    assert memory.cached(tiny_cfg, cache) is None
    cache.write_text("{not json")
    assert memory.cached(tiny_cfg, cache) is None


def test_guard_raises_once_the_peak_crosses_the_cap():
    mx.reset_peak_memory()
    guard = memory_guard.MemoryGuard(cap_gb=mx.get_peak_memory() / memory_guard.GB + 0.01)
    guard.on_train_loss_report({"iteration": 1})  # under the cap: nothing happens
    big = mx.zeros((4_000_000,))  # 16 MB more than the cap allows
    mx.eval(big)
    with pytest.raises(memory_guard.MemoryCapExceeded, match="crossed the memory cap"):
        guard.on_train_loss_report({"iteration": 2})


def test_peak_rss_is_positive():
    memory_guard.reset_peaks()
    assert memory_guard.peak_rss_gb() > 0
