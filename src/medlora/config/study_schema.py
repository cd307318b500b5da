"""The typed shape of the ``study`` config group: what is searched, how, under which memory cap.

Like :mod:`medlora.config.schema`: frozen, strict, no defaults (they live in
``conf/study/*.yaml``), checked once by :func:`medlora.config.to_study_config`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from medlora.config.schema import AnyPath, Name, NonNegativeInt, PositiveInt, Section, Strings


class ParamSpec(Section):
    """One searched config key and its distribution."""

    key: str  # a run-config key, e.g. "train.batch_size"
    type: Literal["categorical", "int", "float"]
    choices: Annotated[tuple, Field(strict=False)] | None = None
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False

    @model_validator(mode="after")
    def _complete(self) -> ParamSpec:
        where = f"study.search_space {self.key}"
        if self.type == "categorical" and not self.choices:
            raise ValueError(f"{where}: categorical needs a non-empty choices list "
                             "(fix: {type: categorical, choices: [1, 2, 4]})")
        if self.type != "categorical":
            if self.low is None or self.high is None or self.low > self.high:
                raise ValueError(f"{where}: {self.type} needs low <= high "
                                 f"(fix: {{type: {self.type}, low: 1, high: 8}})")
            if self.log and self.low <= 0:
                raise ValueError(f"{where}: a log scale needs low > 0 (fix: raise low)")
        return self


class SamplerConfig(Section):
    name: Literal["tpe", "random"]
    seed: int | None
    n_startup_trials: PositiveInt  # random trials before TPE starts modelling


class FidelityConfig(Section):
    """Examples seen (steps x batch size) as a trial's budget: successive halving over rungs.

    Rung k is at ``max_examples / reduction_factor**(rungs-1-k)`` examples; a trial is validated
    at every multiple of the first rung, so its best step is found, not assumed.
    """

    max_examples: PositiveInt  # the top rung: what a trial that is never pruned trains on
    reduction_factor: Annotated[int, Field(ge=2)]  # 1 in reduction_factor trials goes on to the next rung
    rungs: PositiveInt
    first_bracket: NonNegativeInt = 0  # this many configurations are screened at the first rung before any goes
                                       # on; then the best 1 in reduction_factor go on (0: asynchronous throughout)

    @property
    def min_examples(self) -> int:
        return self.max_examples // self.reduction_factor ** (self.rungs - 1)

    @model_validator(mode="after")
    def _whole_rungs(self) -> FidelityConfig:
        if self.max_examples % self.reduction_factor ** (self.rungs - 1):
            raise ValueError(f"study.fidelity.max_examples={self.max_examples} is not divisible by "
                             f"reduction_factor**(rungs-1)={self.reduction_factor ** (self.rungs - 1)} "
                             "(fix: e.g. max_examples=288 with reduction_factor=3 and rungs=3)")
        return self


class PrunerConfig(Section):
    name: Literal["asha", "median", "threshold", "none"]
    n_startup_trials: NonNegativeInt  # trials that are never pruned (they set the median)
    n_warmup_steps: NonNegativeInt  # steps before any pruning
    n_min_trials: PositiveInt  # completed trials that must have reached a step before one is compared there
    upper: float | None = None  # threshold pruner: prune a trial whose val loss is above this

    @model_validator(mode="after")
    def _threshold_has_upper(self) -> PrunerConfig:
        if self.name == "threshold" and self.upper is None:
            raise ValueError("study.pruner.name=threshold needs a number study.pruner.upper "
                             "(fix: +study.pruner.upper=3.0)")
        return self


class AnswerCheckConfig(Section):
    """Answer quality in the loop: every trial that reaches the top rung answers a fixed set of questions,
    scored against their references (MiniLM similarity, repetition) like ``medlora evaluate``."""

    questions: PositiveInt  # a seeded sample of the question set
    set: Literal["consumer", "split"]  # consumer: the consumer set's valid half | split: valid-split questions
    max_tokens: PositiveInt  # answer length (decoding otherwise as generation.*)
    test_questions: NonNegativeInt  # the verdict's answers on the test sample (champion and baseline; 0 = none)


class StudyConfig(Section):
    name: Name
    n_trials: PositiveInt
    timeout_minutes: Annotated[float, Field(gt=0)]
    memory_cap_gb: Annotated[float, Field(gt=0)]
    storage: str  # SQLAlchemy URL or journal:<file> of the Optuna storage (resolved: never null)
    heartbeat_seconds: PositiveInt  # RDB storages: a running trial's heartbeat interval
    grace_seconds: PositiveInt  # RDB storages: a trial silent this long is failed and retried
    enqueue_baseline: bool  # trial 0 = the run config's own values (moved into the search space)
    sampler: SamplerConfig
    pruner: PrunerConfig
    fidelity: FidelityConfig | None  # null: train.iters as configured or searched (no rungs)
    answers: AnswerCheckConfig | None  # null: trials are not asked questions
    objective: Literal["loss", "similarity"]  # what ranks complete trials (champion, promote, verdict)
    search_space: Annotated[tuple[ParamSpec, ...], Field(strict=False)]
    trial_overrides: Strings  # "key=value" applied to every trial
    dir: AnyPath  # <paths.experiments>/<name>: optuna.db, trials.csv, best.yaml, figures/

    @model_validator(mode="after")
    def _fidelity_fits(self) -> StudyConfig:
        keys = {spec.key: spec for spec in self.search_space}
        if self.fidelity is None:
            if self.pruner.name == "asha":
                raise ValueError("study.pruner.name=asha needs study.fidelity (fix: study.fidelity="
                                 "{max_examples: 288, reduction_factor: 3, rungs: 3}, or study.pruner.name=median)")
            return self
        if "train.iters" in keys:
            raise ValueError("study.fidelity sets each trial's train.iters, which the search space also searches "
                             "(fix: study.search_space.train.iters=null, or study.fidelity=null)")
        batch = keys.get("train.batch_size")
        odd = [b for b in (batch.choices or ()) if self.fidelity.min_examples % int(b)] if batch else []
        if odd:
            raise ValueError(f"study.search_space train.batch_size choices {odd} do not divide the first rung "
                             f"({self.fidelity.min_examples} examples) (fix: batch sizes that divide it, or "
                             "another study.fidelity.max_examples)")
        return self

    @model_validator(mode="after")
    def _similarity_needs_answers(self) -> StudyConfig:
        if self.objective == "similarity" and self.answers is None:
            raise ValueError("study.objective=similarity ranks trials by their answers, but study.answers is null "
                             "(fix: study.answers={questions: 32, set: consumer, max_tokens: 128, test_questions: 100}"
                             ", or study.objective=loss)")
        return self

    @model_validator(mode="after")
    def _grace_outlasts_heartbeat(self) -> StudyConfig:
        if self.grace_seconds <= self.heartbeat_seconds:
            raise ValueError(f"study.grace_seconds={self.grace_seconds} must exceed study.heartbeat_seconds="
                             f"{self.heartbeat_seconds} (fix: study.grace_seconds=3x the heartbeat)")
        return self
