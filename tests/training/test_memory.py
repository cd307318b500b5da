"""The memory model predicts measured peaks; it is cached per configuration; the guard stops a run over the cap."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import pytest

from medlora.training import memory, memory_guard
from medlora.config import load_run_config


@pytest.fixture(scope="module")
def tiny_cfg(model_cache):
    return load_run_config(["model=tiny_random", f"paths.models={model_cache}", "train.max_seq_length=64",
                            "train.eval_batch_size=4"])


@pytest.mark.parametrize("batch_size", [2, 8])
def test_prediction_matches_the_peak_of_a_real_training_run(tiny_overrides, batch_size):
    """Calibrated on one-step probes, checked against what mlx-lm's trainer really peaks at in a whole run.

    Both run in a fresh process, as in a study (MLX's peak counts every live array of the process).
    The prediction is for the worst batch (every row full length, every position in the loss), so it must
    never be below the real peak. It is loose: measured 1.8x (batch 2) and 2.6x (batch 8) the real peak
    on this data, where prompts are masked and not every batch is full; the bound keeps it from growing."""
    code = (
        "import json, sys, medlora\n"
        "from medlora.config import load_run_config\n"
        "from medlora.training import memory\n"
        "from medlora.training.run import train\n"
        "cfg = load_run_config(json.loads(sys.argv[1]))\n"
        "predicted = memory.calibrate(cfg, max_lora_layers=2).predict_gb(cfg.train.batch_size, "
        "cfg.train.max_seq_length, 2)\n"
        "print(json.dumps([predicted / memory.SAFETY, train(cfg).peak_memory_gb]))\n"
    )
    overrides = [*tiny_overrides, f"train.batch_size={batch_size}", "probes.questions=[]"]
    done = subprocess.run([sys.executable, "-c", code, json.dumps(overrides)], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    predicted, measured = json.loads(done.stdout.strip().splitlines()[-1])
    assert measured <= predicted <= 3 * measured, (predicted, measured)


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


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="peak RSS resets need Linux /proc")
def test_peak_rss_sees_an_allocation_and_resets():
    """In a fresh process: in the test session, memory freed by earlier tests stays resident and a new
    block can reuse it without the RSS growing."""
    code = ("import json, numpy as np\n"
            "from medlora.training import memory_guard\n"
            "memory_guard.reset_peaks()\n"
            "before = memory_guard.peak_rss_gb()\n"
            "block = np.ones(50_000_000)  # 0.4 GB, touched\n"
            "during = memory_guard.peak_rss_gb()\n"
            "del block\n"
            "memory_guard.reset_peaks()\n"
            "print(json.dumps([before, during, memory_guard.peak_rss_gb()]))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    before, during, after = json.loads(done.stdout.strip().splitlines()[-1])
    assert during - before > 0.35 and after < during - 0.3
