"""Measure a run's memory while it trains, and stop it when it crosses the study's cap.

MLX reports its own peak (``mx.get_peak_memory``); the process's peak resident set (Linux
``VmHWM``, reset through ``/proc/self/clear_refs``) adds what MLX does not see.
"""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
from mlx_lm.tuner.callbacks import TrainingCallback

GB = 1e9


def reset_peaks() -> None:
    """Reset MLX's peak counter and (Linux) the process's peak RSS, so each trial measures its own."""
    mx.reset_peak_memory()
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss_gb() -> float:
    """The process's peak resident set since the last reset (Linux VmHWM), else the current RSS."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / GB
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GB


class MemoryCapExceeded(Exception):
    """Raised from inside training when the measured MLX peak crosses the cap."""

    def __init__(self, peak_gb: float, cap_gb: float, iteration: int):
        super().__init__(f"measured peak {peak_gb:.2f} GB crossed the memory cap {cap_gb:.2f} GB at iteration {iteration}")
        self.peak_gb, self.cap_gb, self.iteration = peak_gb, cap_gb, iteration


class MemoryGuard(TrainingCallback):
    """Stop the run at the first report whose MLX peak memory is over the cap."""

    def __init__(self, cap_gb: float):
        self.cap_gb = cap_gb

    def _check(self, iteration: int) -> None:
        peak = mx.get_peak_memory() / GB
        if peak > self.cap_gb:
            raise MemoryCapExceeded(peak, self.cap_gb, iteration)

    def on_train_loss_report(self, info: dict) -> None:
        self._check(info["iteration"])

    def on_val_loss_report(self, info: dict) -> None:
        self._check(info["iteration"])
