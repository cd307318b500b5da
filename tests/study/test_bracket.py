"""The synchronous first rung: the first configurations are screened together, then the best go on."""

from __future__ import annotations

import math

import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from medlora.study import bracket

SPACE = {"x": FloatDistribution(0.0, 10.0)}
RUNG, ETA = 4, 2  # rungs at 4, 8, 16 examples


def _study() -> tuple[optuna.Study, bracket.Promote]:
    halving = optuna.pruners.SuccessiveHalvingPruner(min_resource=RUNG, reduction_factor=ETA, min_early_stopping_rate=0)
    study = optuna.create_study(pruner=bracket.FirstBracketPruner(halving, RUNG, ETA),
                                sampler=optuna.samplers.RandomSampler(seed=0))
    return study, bracket.Promote(size=4, reduction_factor=ETA, first_rung=RUNG)


def _run(study: optuna.Study, promote: bracket.Promote, losses: dict[int, float]) -> tuple[str | None, bool, list]:
    """One trial: its role, whether it was stopped (at the first rung it passed), what the callback promoted."""
    trial = study.ask(SPACE)
    role = bracket.assign(trial, 4)
    stopped = False
    for step, loss in sorted(losses.items()):
        trial.report(loss, step)
        if trial.should_prune():
            stopped = True
            break
    study.tell(trial, state=TrialState.PRUNED) if stopped else study.tell(trial, min(losses.values()))
    return role, stopped, promote(study, study.trials[-1])


def test_the_first_configurations_are_screened_together_and_the_best_go_on():
    study, promote = _study()
    study.enqueue_trial({"x": 5.0}, user_attrs={"baseline": True})
    assert _run(study, promote, {4: 1.0, 8: 0.9, 16: 0.8}) == (None, False, [])  # the baseline goes to the top
    screened = [2.5, 1.5, 3.0, 1.7]  # trials 1-4
    for n, loss in enumerate(screened, start=1):
        role, stopped, promoted = _run(study, promote, {4: loss, 8: loss - 0.3, 16: loss - 0.4})
        assert role == "screen" and stopped  # stopped at the first rung, however good
        assert study.trials[n].last_step == RUNG
        assert promoted == ([2, 4] if n == 4 else [])  # the best half of four, best first, once all four are in
    assert study.user_attrs[bracket.DONE] == [2, 4]
    # trial 5 is trial 2's configuration again (the same first rung: the same seed); it goes on to the top
    role, stopped, _ = _run(study, promote, {4: 1.5, 8: 0.85, 16: 0.7})
    assert study.trials[5].params == study.trials[2].params
    assert study.trials[5].user_attrs[bracket.PROMOTED_FROM] == 2
    assert role == "promoted" and not stopped and study.trials[5].state == TrialState.COMPLETE
    # trial 6 (trial 4's) passes the first rung although the baseline, trial 2 and its twin trial 5 fill the
    # best 2 of 7 there (asynchronous halving alone would stop it), and is stopped at the second rung
    role, stopped, _ = _run(study, promote, {4: 1.7, 8: 1.95, 16: 1.0})
    assert role == "promoted" and stopped and study.trials[6].last_step == 8
    # after the bracket, ordinary asynchronous halving against everyone at the first rung
    role, stopped, promoted = _run(study, promote, {4: 2.2, 8: 1.0, 16: 0.9})
    assert role is None and stopped and study.trials[7].last_step == RUNG and promoted == []


def test_a_diverged_configuration_fills_the_bracket_but_is_not_promoted():
    study, promote = _study()
    for loss in (math.nan, 2.0, 2.4, 2.2):
        role, stopped, promoted = _run(study, promote, {4: loss, 8: loss})
        assert role == "screen" and stopped
    assert promoted == [1, 3]
    assert bracket.assign(study.ask(SPACE), 4) == "promoted"
    assert bracket.assign(study.ask(SPACE), 4) == "promoted"
    assert bracket.assign(study.ask(SPACE), 4) is None  # the bracket is closed: no more screens


def test_a_retried_screen_keeps_its_role_and_the_bracket_waits_for_it():
    study, promote = _study()
    for loss in (2.0, 2.1, 2.2):
        _run(study, promote, {4: loss})
    crashed = study.ask(SPACE)
    assert bracket.assign(crashed, 4) == "screen"
    retry = study.ask(SPACE)  # another worker: the bracket is full while the fourth one runs
    assert bracket.assign(retry, 4) is None
    study.tell(retry, state=TrialState.FAIL)
    assert promote(study, None) == []  # a screen still running: not yet
    study.tell(crashed, state=TrialState.FAIL)  # its process died: Optuna's retry copies its user attributes
    again = study.ask(SPACE)
    again.set_user_attr(bracket.ROLE, crashed.user_attrs[bracket.ROLE])
    assert bracket.assign(again, 4) == "screen"
    again.report(1.0, 4)
    assert again.should_prune()
    study.tell(again, state=TrialState.PRUNED)
    assert promote(study, None) == [again.number, 0]


def test_a_near_twin_of_a_promoted_configuration_is_not_promoted_too():
    study, promote = _study()
    for x, loss in ((4.1, 2.0), (4.4, 2.05), (8.0, 2.3), (1.0, 2.2)):  # 4.4 is within 10% of 4.1
        study.enqueue_trial({"x": x})
        _run(study, promote, {4: loss})
    assert study.user_attrs[bracket.DONE] == [0, 3]  # the best, then the best that is not its near twin
    assert bracket.near({"b": 2, "lr": 4.1e-4}, {"b": 2, "lr": 4.4e-4})
    assert not bracket.near({"b": 2, "lr": 4.1e-4}, {"b": 4, "lr": 4.1e-4})
    assert not bracket.near({"b": 2, "lr": 4.1e-4}, {"b": 2, "lr": 5.0e-4})
