"""A synchronous first rung for successive halving: many configurations are screened before any goes on.

Optuna's successive halving is asynchronous: a trial is promoted when it is in the best
``1 / reduction_factor`` of the trials that reached its rung *so far*. One worker runs trials one
after the other, so the first trials are promoted with next to no competition: in a measured
30-minute study, trial 1 went to the top rung after beating the baseline alone at 16 examples, and
its ~10 minutes there were a third of the study.

With ``study.fidelity.first_bracket: N`` the first N trials after the baseline are **screened**:
each trains to the first rung only and stops there (state PRUNED, reason "screened"). When N have
been screened, the best ``N // reduction_factor`` of them (by their first-rung loss, skipping a near
twin of one already chosen: :func:`near`) are enqueued again, best first, and **promoted**: they train from the start (same seed: the same first rung)
with the usual successive halving above the first rung, where they compete with every trial that
got there. Trials after them are ordinary asynchronous successive halving, compared at the first
rung with all the screened ones. Optuna cannot suspend a trial, so a promoted configuration pays its
first rung twice (~30 s on 2 cores).

:class:`FirstBracketPruner` wraps the successive-halving pruner (which still records every rung's
value, so later trials compete with the screened ones); :func:`assign` tells a starting trial what it
is; :class:`Promote` is the study callback that enqueues the promoted configurations.
"""

from __future__ import annotations

import math

import optuna
from optuna.trial import TrialState

from medlora.config import StudyConfig

ROLE = "bracket"  # trial user attribute: "screen" | "promoted"
PROMOTED_FROM = "promoted_from"  # trial user attribute: the screened trial whose configuration this is
DONE = "first_bracket_promoted"  # study user attribute: the screened trials that were promoted


def size(study_cfg: StudyConfig) -> int:
    """How many configurations are screened together at the first rung (with successive halving only)."""
    fidelity = study_cfg.fidelity
    return fidelity.first_bracket if fidelity is not None and study_cfg.pruner.name == "asha" else 0


class FirstBracketPruner(optuna.pruners.BasePruner):
    """Successive halving, except that screened trials stop at the first rung and promoted ones pass it."""

    def __init__(self, inner: optuna.pruners.BasePruner, first_rung: int, reduction_factor: int):
        self.inner, self.first_rung, self.second_rung = inner, first_rung, first_rung * reduction_factor

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        decided = self.inner.prune(study, trial)  # first: it records the trial's value at each rung it reaches
        step = trial.last_step
        if step is None or step < self.first_rung or math.isnan(trial.intermediate_values[step]):
            return decided
        role = trial.user_attrs.get(ROLE)
        if role == "screen":
            return True
        if role == "promoted" and step < self.second_rung:
            return False  # already chosen among the screened: its own twin must not crowd it out
        return decided


def assign(trial: optuna.Trial, size: int) -> str | None:
    """Give a starting trial its role (a user attribute) and return it: "screen" while the first bracket is not
    full, "promoted" for an enqueued configuration (a retried trial keeps the role it had: Optuna's retry copies
    user attributes), None otherwise (the baseline, trials after the bracket)."""
    given = trial.user_attrs.get(ROLE)
    if given is not None or trial.user_attrs.get("baseline") or size <= 0:
        return given
    if trial.study.user_attrs.get(DONE) is not None:
        return None
    screens = [t for t in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                                          TrialState.RUNNING))
               if t.user_attrs.get(ROLE) == "screen" and t.number != trial.number]
    if len(screens) >= size:
        return None
    trial.set_user_attr(ROLE, "screen")
    return "screen"


def near(a: dict, b: dict, tolerance: float = 0.1) -> bool:
    """The same configuration for practical purposes: equal on every setting but floats (learning rate), which
    are within ``tolerance`` (relative) of each other. TPE proposes such near twins once it has found a region:
    with seed 1, three of the best six screened were batch 2, 14 layers, rank 4 at learning rates 4.1e-4 to
    4.4e-4, and each paid the second rung to learn the same thing."""
    if a.keys() != b.keys():
        return False
    for key, x in a.items():
        y = b[key]
        if isinstance(x, float) and isinstance(y, float):
            if abs(x - y) > tolerance * max(abs(x), abs(y)):
                return False
        elif x != y:
            return False
    return True


class Promote:
    """Study callback: once ``size`` trials are screened, enqueue the best ``size // reduction_factor`` (no near
    twins)."""

    def __init__(self, size: int, reduction_factor: int, first_rung: int):
        self.size, self.keep, self.first_rung = size, max(1, size // reduction_factor), first_rung

    def __call__(self, study: optuna.Study, _trial: optuna.trial.FrozenTrial | None = None) -> list[int]:
        if self.size <= 0 or study.user_attrs.get(DONE) is not None:
            return []
        screened = [t for t in study.get_trials(deepcopy=False, states=(TrialState.PRUNED, TrialState.COMPLETE))
                    if t.user_attrs.get(ROLE) == "screen"]
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if len(screened) < self.size or any(t.user_attrs.get(ROLE) == "screen" for t in running):
            return []
        ranked = [t for t in screened if not math.isnan(t.intermediate_values.get(self.first_rung, math.nan))]
        best: list[optuna.trial.FrozenTrial] = []
        for t in sorted(ranked, key=lambda t: t.intermediate_values[self.first_rung]):
            if len(best) < self.keep and not any(near(t.params, kept.params) for kept in best):
                best.append(t)
        study.set_user_attr(DONE, [t.number for t in best])
        for t in best:
            study.enqueue_trial(t.params, user_attrs={ROLE: "promoted", PROMOTED_FROM: t.number},
                                skip_if_exists=False)
        return [t.number for t in best]
