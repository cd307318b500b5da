"""``mlx_lm.tuner.TrainingCallback`` implementations: everything medlora adds to a run.

mlx-lm's trainer calls ``on_val_loss_report`` *before* the step of iteration
``it`` (reporting ``iteration = it - 1``, so the first report is the base model
at iteration 0) and ``on_train_loss_report`` after every ``steps_per_report``
steps. The only way to stop a run from a callback is to raise.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import mlx.core as mx
from mlx.utils import tree_flatten
from mlx_lm.tuner.callbacks import TrainingCallback

from medlora.faults import kill_point
from medlora.models import blas
from medlora.models.generation import generate_answer


@dataclass
class History:
    """What the run has seen so far (for the loss curve and the run's result)."""

    train: list[tuple[int, float]] = field(default_factory=list)  # (iteration, train loss)
    val: list[tuple[int, float]] = field(default_factory=list)  # (iteration, val loss)
    trained_tokens: int = 0
    peak_memory_gb: float = 0.0
    tokens_per_second: list[float] = field(default_factory=list)
    eval_seconds: list[float] = field(default_factory=list)
    best_val: float = math.inf  # lowest validation loss after iteration 0 (the base model is no candidate)


class CallbackList(TrainingCallback):
    """Fan one trainer callback out to several, in order."""

    def __init__(self, callbacks: Iterable[TrainingCallback]):
        self.callbacks = list(callbacks)

    def on_train_loss_report(self, train_info: dict) -> None:
        for cb in self.callbacks:
            cb.on_train_loss_report(train_info)

    def on_val_loss_report(self, val_info: dict) -> None:
        for cb in self.callbacks:
            cb.on_val_loss_report(val_info)


class MetricsLogger(TrainingCallback):
    """Log train/val metrics to the active MLflow run with ``step=iteration``; keep a History.

    The learning rate is constant (no schedule): it is a param, not a metric. ``best_val_loss`` is
    the running minimum, so a run stopped early (pruned) has one too.
    """

    def __init__(self, history: History, skip_base: bool = False):
        self.history, self.skip_base = history, skip_base

    def on_train_loss_report(self, info: dict) -> None:
        h = self.history
        h.train.append((info["iteration"], info["train_loss"]))
        h.trained_tokens = int(info["trained_tokens"])
        h.peak_memory_gb = max(h.peak_memory_gb, info["peak_memory"])
        h.tokens_per_second.append(info["tokens_per_second"])
        mlflow.log_metrics(
            shown({
                "train_loss": info["train_loss"],
                "tokens_per_second": info["tokens_per_second"],
                "trained_tokens": info["trained_tokens"],
                "peak_memory_gb": info["peak_memory"],
            }),
            step=info["iteration"],
        )
        kill_point("train")

    def on_val_loss_report(self, info: dict) -> None:
        if info["iteration"] == 0 and self.skip_base:
            return  # not measured (train.validate_base=false): one example only, so mlx-lm's loop goes on
        if not math.isfinite(info["val_loss"]):
            raise FloatingPointError(
                f"validation loss is {info['val_loss']} at iteration {info['iteration']}: training diverged "
                "(fix: lower train.learning_rate)"
            )
        h = self.history
        h.val.append((info["iteration"], info["val_loss"]))
        h.eval_seconds.append(info["val_time"])
        metrics = {"val_loss": info["val_loss"], "val_seconds": info["val_time"]}
        if info["iteration"] > 0:
            h.best_val = min(h.best_val, info["val_loss"])
            metrics["best_val_loss"] = h.best_val
        mlflow.log_metrics(shown(metrics), step=info["iteration"])
        kill_point("evaluate")


def shown(metrics: dict) -> dict:
    """Metrics with the digits that mean something (losses and GB: 4 decimals; rates, seconds: 2), so that
    MLflow's runs table shows them whole instead of "10.6804771..."."""
    return {k: round(v, 4 if k.endswith(("_loss", "_gb")) else 2) for k, v in metrics.items()}


class BestAdapterKeeper(TrainingCallback):
    """Save the adapter weights whenever validation loss reaches a new minimum.

    Iteration 0 (before any step) is the base model itself: it is a reference, not a candidate, so a
    run that only gets worse reports its least bad trained adapter rather than the base model's loss.
    """

    def __init__(self, model, out_dir: Path, adapter_config: dict):
        self.model = model
        self.out_dir = out_dir
        self.adapter_config = adapter_config
        self.best_loss = math.inf
        self.best_iteration: int | None = None

    def on_val_loss_report(self, info: dict) -> None:
        if info["iteration"] > 0 and info["val_loss"] < self.best_loss:
            self.best_loss = info["val_loss"]
            self.best_iteration = info["iteration"]
            save_adapter(self.model, self.out_dir, {**self.adapter_config, "iteration": info["iteration"],
                                                    "val_loss": info["val_loss"]})


class ProbeSampler(TrainingCallback):
    """At every evaluation, answer fixed probe questions: appended to the MLflow table ``samples.json``
    and rewritten as ``samples.html``, every answer in full, one evaluation after another."""

    def __init__(self, model, tokenizer, questions: tuple[str, ...], max_tokens: int,
                 system_prompt: str | None = None, artifact_file: str = "samples.json",
                 only_at: int | None = None):
        self.model, self.tokenizer = model, tokenizer
        self.questions, self.max_tokens = questions, max_tokens
        self.system_prompt = system_prompt
        self.artifact_file = artifact_file
        self.only_at = only_at  # answer at this iteration only (the last evaluation), not at every one
        self.evaluations: list[tuple[int, float, list[str]]] = []  # (iteration, val loss, answers)

    def on_val_loss_report(self, info: dict) -> None:
        if not self.questions or self.only_at not in (None, info["iteration"]):
            return
        tic = time.perf_counter()
        self.model.eval()
        with blas.threads(os.cpu_count() or 1):  # training may run with fewer (see medlora.blas.threads)
            answers = [
                generate_answer(self.model, self.tokenizer, q, max_tokens=self.max_tokens,
                                system_prompt=self.system_prompt)
                for q in self.questions
            ]
        self.model.train()
        mlflow.log_metric("probe_seconds", time.perf_counter() - tic, step=info["iteration"])
        mlflow.log_table(
            {"iteration": [info["iteration"]] * len(answers), "question": list(self.questions), "answer": answers},
            artifact_file=self.artifact_file,
        )
        self.evaluations.append((info["iteration"], info["val_loss"], answers))
        mlflow.log_text(samples_html(self.questions, self.evaluations), "samples.html")


def samples_html(questions: tuple[str, ...], evaluations: list[tuple[int, float, list[str]]]) -> str:
    """The probe answers as a page: per evaluation, each question and its whole answer (MLflow renders it)."""
    from html import escape

    parts = ["<!doctype html><meta charset='utf-8'><style>body{font:14px/1.45 sans-serif;margin:12px;max-width:60em}"
             "h2{font-size:15px;margin:18px 0 6px;border-bottom:1px solid #ccc}p.q{font-weight:600;margin:8px 0 2px}"
             "p.a{white-space:pre-wrap;margin:0 0 8px 12px}</style>",
             f"<h1 style='font-size:17px'>Probe answers at each evaluation ({len(evaluations)} so far)</h1>"]
    for iteration, val_loss, answers in evaluations:
        label = "the base model" if iteration == 0 else f"after {iteration} steps"
        parts.append(f"<h2>Iteration {iteration} ({label}): validation loss {val_loss:.4f}</h2>")
        for question, answer in zip(questions, answers):
            parts.append(f"<p class='q'>{escape(question)}</p><p class='a'>{escape(answer) or '<i>(empty)</i>'}</p>")
    return "\n".join(parts) + "\n"


def save_adapter(model, out_dir: Path, adapter_config: dict) -> None:
    """Write ``adapters.safetensors`` + ``adapter_config.json`` (the layout ``mlx_lm.load`` reads)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = dict(tree_flatten(model.trainable_parameters()))
    mx.save_safetensors(str(out_dir / "adapters.safetensors"), weights)
    (out_dir / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2, sort_keys=True))


def loss_curve_figure(history: History, title: str = ""):
    """Train and validation loss against iteration, one matplotlib figure (Agg: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    if history.train:
        ax.plot(*zip(*history.train), label="train loss", color="tab:blue", alpha=0.8)
    if history.val:
        ax.plot(*zip(*history.val), "o-", label="validation loss", color="tab:orange")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss (nats / answer token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    plt.close(fig)
    return fig
