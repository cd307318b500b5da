"""The search space: Optuna distributions of the searched keys, trimmed to what fits the memory cap.

Two things keep every proposed configuration within ``study.memory_cap_gb`` (by the memory model's
prediction), so no trial number is spent on one that would never train:

- batch sizes that do not fit even with the fewest LoRA layers are dropped from the space when the
  study starts (:func:`fitting_space`; the same memory model gives the same space on resume);
- ``lora.num_layers`` is drawn after the batch size, its upper end lowered to what fits with it
  (:func:`suggest_all`; Optuna allows an int range to change between trials).
"""

from __future__ import annotations

import sys

import optuna

from medlora.config import ParamSpec, StudyConfig, TrainConfig
from medlora.errors import UserError
from medlora.training.memory import MemoryModel


def distribution(spec: ParamSpec) -> optuna.distributions.BaseDistribution:
    """The Optuna distribution of one searched key."""
    if spec.type == "categorical":
        return optuna.distributions.CategoricalDistribution(list(spec.choices))
    if spec.type == "int":
        return optuna.distributions.IntDistribution(int(spec.low), int(spec.high), log=spec.log,
                                                    step=int(spec.step or 1))
    return optuna.distributions.FloatDistribution(float(spec.low), float(spec.high), log=spec.log, step=spec.step)


def suggest(trial: optuna.Trial, spec: ParamSpec, high: float | None = None):
    """One value of ``spec``; ``high`` (for ints) lowers its upper end for this trial (what still fits the cap)."""
    if spec.type == "categorical":
        return trial.suggest_categorical(spec.key, list(spec.choices))
    if spec.type == "int":
        return trial.suggest_int(spec.key, int(spec.low), int(high if high is not None else spec.high),
                                 step=int(spec.step or 1), log=spec.log)
    return trial.suggest_float(spec.key, float(spec.low), float(spec.high), step=spec.step, log=spec.log)


def suggest_all(trial: optuna.Trial, study_cfg: StudyConfig, mem: MemoryModel, defaults: TrainConfig,
                n_blocks: int) -> dict:
    """Every searched value, in the space's order; ``lora.num_layers`` bounded by what fits the memory cap
    with the batch size already drawn, so no trial number is spent on a configuration predicted over it."""
    params: dict = {}
    for spec in study_cfg.search_space:
        high = None
        if spec.key == "lora.num_layers" and spec.type == "int" and spec.high <= n_blocks:
            batch = params.get("train.batch_size", defaults.batch_size)
            high = mem.max_layers(batch, defaults.max_seq_length, study_cfg.memory_cap_gb,
                                  int(spec.low), int(spec.high), int(spec.step or 1))
        params[spec.key] = suggest(trial, spec, high)
    return params


def fitting_space(study_cfg: StudyConfig, mem: MemoryModel, defaults: TrainConfig, layers: int) -> StudyConfig:
    """``study_cfg`` without the batch sizes predicted over the cap even with the fewest LoRA layers
    (the searched range's low end, else ``layers``: the run config's)."""
    searched = next((s for s in study_cfg.search_space if s.key == "lora.num_layers"), None)
    fewest = int(min(searched.choices) if searched.type == "categorical" else searched.low) if searched else layers
    specs = []
    for spec in study_cfg.search_space:
        if spec.key == "train.batch_size" and spec.type == "categorical":
            fits = [b for b in spec.choices
                    if mem.predict_gb(int(b), defaults.max_seq_length, fewest) <= study_cfg.memory_cap_gb]
            if not fits:
                least = mem.predict_gb(int(min(spec.choices)), defaults.max_seq_length, fewest)
                raise UserError(f"no train.batch_size of the search space ({list(spec.choices)}) fits "
                                f"study.memory_cap_gb={study_cfg.memory_cap_gb} even with {fewest} LoRA layers "
                                f"(the smallest is predicted at {least:.2f} GB) "
                                "(fix: raise study.memory_cap_gb or lower train.max_seq_length)")
            if len(fits) < len(spec.choices):
                dropped = [b for b in spec.choices if b not in fits]
                print(f"medlora: batch sizes {dropped} do not fit the {study_cfg.memory_cap_gb} GB cap even with "
                      f"{fewest} LoRA layers: not searched", file=sys.stderr)
                spec = spec.model_copy(update={"choices": tuple(fits)})
        specs.append(spec)
    return study_cfg.model_copy(update={"search_space": tuple(specs)})
