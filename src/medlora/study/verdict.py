"""The study's verdict: is its champion better than its baseline (trial 0, the configuration as it
stands), by more than the noise?

Both trials' best adapters are scored question by question on two sets neither was chosen on:

- ``fresh validation``: (curated) valid-split questions *after* the study's fixed validation subset (the
  subset ranked the trials, so the champion's loss there is biased low: the winner's curse);
- ``test``: the held-out test split, the same seeded sample as ``medlora evaluate`` (evaluate.questions).

The difference (champion - baseline, mean answer-token loss per question) gets a 95% paired bootstrap
interval over questions. "better" means the whole interval is below 0.

With ``study.answers`` the answers are compared too (similarity to the reference answers, higher is
better: "better" means the whole interval is above 0): champion vs the untuned model and vs the
baseline on the study's questions (scored during the study), and champion vs baseline on
``study.answers.test_questions`` of the test sample (answered here). Written to
``<study dir>/verdict.json`` and ``verdict.md``, logged to the study's MLflow parent run, printed.
"""

from __future__ import annotations

import json
import sys

import mlflow
import numpy as np
import optuna

from medlora.config import RunConfig
from medlora.config.study_schema import AnswerCheckConfig
from medlora.data import splits
from medlora.data.questions import test_sample
from medlora.files import temporary_dir, write_file
from medlora.models.generation import load_with_adapter
from medlora.study import answer_check, report
from medlora.training.batches import shuffled_valid
from medlora.training.heldout import paired_bootstrap, per_question_losses


def pick(study: optuna.Study, objective: str = "loss"):
    """(champion, baseline): the best complete trial by ``objective`` and the complete trial 0 marked baseline,
    or None each."""
    baseline = next((t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
                     if t.user_attrs.get("baseline")), None)
    return report.best_trial(study, objective), baseline


def held_out_sets(cfg: RunConfig) -> dict[str, list[dict]]:
    """The fresh validation questions and the test sample (the valid split shuffled as training does)."""
    valid = shuffled_valid(cfg, splits.prepare_from_config(cfg.data, cfg.paths.processed))
    fresh = valid[cfg.train.val_examples: cfg.train.val_examples + answer_check.FRESH_VALIDATION]
    return {"fresh validation": fresh, "test": test_sample(cfg)}


def adapter_losses(cfg: RunConfig, run_id: str, sets: dict[str, list[dict]]) -> dict:
    """Per-question losses of one trial's best adapter on each set."""
    with temporary_dir("verdict") as tmp:
        folder = mlflow.artifacts.download_artifacts(f"runs:/{run_id}/adapters/best", dst_path=str(tmp))
        model, tokenizer = load_with_adapter(cfg, folder)
    return {name: per_question_losses(cfg, model, tokenizer, records) for name, records in sets.items()}


def spent(study: optuna.Study) -> dict:
    """What the search cost: configurations tried (a first-bracket configuration trained again counts once), per
    hour, tokens trained by complete trials, and (with a fidelity, where a trial's last report is the examples it
    had seen) examples trained by all trials."""
    trials = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished() and t.datetime_complete]
    if not trials:
        return {}
    hours = (max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)).total_seconds() / 3600
    examples = [max(t.intermediate_values, default=0) for t in trials]
    states = [t.state.name for t in trials]
    configurations = len(trials) - sum("promoted_from" in t.user_attrs for t in trials)
    return {"configurations": configurations, "trials": len(trials), "complete": states.count("COMPLETE"),
            "pruned": states.count("PRUNED"), "screened": sum(t.user_attrs.get("bracket") == "screen" for t in trials),
            "per_hour": round(configurations / hours, 1) if hours > 0 else None,
            "last_reported_step_sum": int(sum(examples)),
            "trained_tokens_of_complete": int(sum(t.user_attrs.get("trained_tokens", 0) for t in trials))}


def judge(cfg: RunConfig, study: optuna.Study, objective: str = "loss",
          answers: AnswerCheckConfig | None = None) -> dict | None:
    """Score champion and baseline; return the verdict (None when there is no complete baseline or champion)."""
    champion, baseline = pick(study, objective)
    if champion is None or baseline is None:
        return None
    verdict = {"champion_trial": champion.number, "baseline_trial": baseline.number, "objective": objective,
               "champion_params": champion.params, "baseline_params": baseline.params,
               "champion_best_iteration": champion.user_attrs.get("best_iteration"),
               "search": spent(study), "adapter_strength": cfg.generation.adapter_strength, "sets": {}}
    if champion.number == baseline.number:
        verdict["summary"] = "the champion is the baseline: the study found no better configuration"
        if answers is not None:  # still: are its answers better or worse than the untuned model's?
            verdict["answers"] = answer_verdict(cfg, study, champion, champion, answers.model_copy(
                update={"test_questions": 0}), [])
        return with_base_note(verdict)
    sets = held_out_sets(cfg)
    print(f"medlora: verdict: trial {champion.number} vs baseline trial {baseline.number} on "
          + ", ".join(f"{len(r)} {n} questions" for n, r in sets.items()), file=sys.stderr)
    ours = adapter_losses(cfg, champion.user_attrs["run_id"], sets)
    theirs = adapter_losses(cfg, baseline.user_attrs["run_id"], sets)
    for name in sets:
        diff, lo, hi = paired_bootstrap(ours[name], theirs[name])
        verdict["sets"][name] = {"questions": len(sets[name]), "champion_loss": float(ours[name].mean()),
                                 "baseline_loss": float(theirs[name].mean()), "difference": diff,
                                 "ci95": [lo, hi], "loss_better": bool(hi < 0), "loss_worse": bool(lo > 0)}
    if answers is not None:
        verdict["answers"] = answer_verdict(cfg, study, champion, baseline, answers, sets["test"])
    better = [f"{n} {k}" for n, v in all_sets(verdict) for k in ("loss", "similarity") if v.get(f"{k}_better")]
    worse = [f"{n} {k}" for n, v in all_sets(verdict) for k in ("loss", "similarity") if v.get(f"{k}_worse")]
    verdict["summary"] = (
        f"trial {champion.number} beats the baseline beyond the noise on {', '.join(better)}" if better
        else f"trial {champion.number} is not better than the baseline beyond the noise"
    ) + (f"; it is worse on {', '.join(worse)}" if worse else "")
    return with_base_note(verdict)


def with_base_note(verdict: dict) -> dict:
    """Add to the summary how the champion's answers compare with the untuned model's, when they were scored."""
    vs_base = verdict.get("answers", {}).get("study questions vs base model")
    if vs_base is not None:
        how = ("better than" if vs_base["similarity_better"] else "worse than" if vs_base["similarity_worse"]
               else "not different beyond the noise from")
        verdict["summary"] += (f"; its answers to the study's questions are {how} the untuned model's "
                               f"(similarity {vs_base['difference']:+.3f})")
    return verdict


def all_sets(verdict: dict):
    """(set name, comparison) of the loss sets and the answer comparisons with the baseline."""
    yield from verdict["sets"].items()
    yield from ((n, v) for n, v in verdict.get("answers", {}).items() if v.get("versus") == "baseline")


def _compared(ours: dict, theirs: dict, versus: str) -> dict | None:
    compared = answer_check.versus(ours, theirs)
    if compared is None:
        return None
    diff, lo, hi = compared
    return {"versus": versus, "questions": len(ours["similarity"]), "difference": diff, "ci95": [lo, hi],
            "champion_repetition": float(np.mean(ours["repetition"])),
            "other_repetition": float(np.mean(theirs["repetition"])),
            "similarity_better": bool(lo > 0), "similarity_worse": bool(hi < 0)}


def answer_verdict(cfg: RunConfig, study: optuna.Study, champion, baseline, spec: AnswerCheckConfig,
                   test: list[dict]) -> dict:
    """Answer similarity, champion vs base model and vs baseline on the study's questions (scored during the
    study), and champion vs baseline on ``spec.test_questions`` of the test sample (answered now)."""
    ours, theirs = champion.user_attrs.get("answer_scores"), baseline.user_attrs.get("answer_scores")
    base = study.user_attrs.get(answer_check.BASE_KEY)
    out = {}
    if ours and base:
        out["study questions vs base model"] = _compared(ours, base, "base model")
    if ours and theirs and champion.number != baseline.number:
        out["study questions"] = _compared(ours, theirs, "baseline")
    if spec.test_questions:
        asked = answer_check.from_records(test[: spec.test_questions], "test", spec.max_tokens, cfg.generation)
        print(f"medlora: verdict: answering {len(asked.prompts)} test questions with each adapter", file=sys.stderr)
        scores = [answer_check.adapter_scores(cfg, t.user_attrs["run_id"], asked, spec) for t in (champion, baseline)]
        out["test answers"] = _compared(*scores, "baseline")
    return {k: v for k, v in out.items() if v is not None}


def markdown(verdict: dict) -> str:
    lines = [f"# Verdict: {verdict['summary']}", "",
             f"champion trial {verdict['champion_trial']}: {verdict['champion_params']}  ",
             f"baseline trial {verdict['baseline_trial']}: {verdict['baseline_params']}", ""]
    if verdict.get("search"):
        k = verdict["search"]
        lines += [f"Search: {k['configurations']} configurations in {k.get('trials', k['configurations'])} trials "
                  f"({k['complete']} complete, {k['pruned']} pruned, {k.get('screened', 0)} of them screened), "
                  f"{k['per_hour']} per hour; the champion's best step: iteration "
                  f"{verdict.get('champion_best_iteration')}.", ""]
    if verdict["sets"]:
        lines += ["| set | questions | champion loss | baseline loss | difference | 95% interval | better |",
                  "|---|---|---|---|---|---|---|"]
        for name, v in verdict["sets"].items():
            lines.append(f"| {name} | {v['questions']} | {v['champion_loss']:.4f} | {v['baseline_loss']:.4f} | "
                         f"{v['difference']:+.4f} | [{v['ci95'][0]:+.4f}, {v['ci95'][1]:+.4f}] | "
                         f"{'yes' if v['loss_better'] else 'no'} |")
        lines += ["", "Losses: mean answer-token cross-entropy per question; interval: paired bootstrap over "
                  "questions (2,000 resamples)." + strength_note(verdict)]
    if verdict.get("answers"):
        lines += ["", "| answers | questions | champion - | similarity difference | 95% interval | repetition "
                  "(champion / other) |", "|---|---|---|---|---|---|"]
        for name, v in verdict["answers"].items():
            lines.append(f"| {name} | {v['questions']} | {v['versus']} | {v['difference']:+.4f} | "
                         f"[{v['ci95'][0]:+.4f}, {v['ci95'][1]:+.4f}] | {v['champion_repetition']:.2f} / "
                         f"{v['other_repetition']:.2f} |")
        lines += ["", "Similarity: MiniLM cosine of each answer to its reference answer (as `medlora evaluate`); "
                  "repetition: the share of answers repeating a 4-word run."]
    return "\n".join(lines) + "\n"


def strength_note(verdict: dict) -> str:
    """How the adapters were scored, when not as trained (generation.adapter_strength)."""
    strength = verdict.get("adapter_strength", 1)
    return "" if strength == 1 else (f" Both adapters scored as they answer: every LoRA update x {strength:g} "
                                     "(generation.adapter_strength).")


def record(verdict: dict, study_dir, run_id: str | None) -> None:
    """verdict.json and verdict.md in the study folder, metrics on the parent run, the summary printed."""
    write_file(study_dir / "verdict.json", json.dumps(verdict, indent=2, default=str))
    write_file(study_dir / "verdict.md", markdown(verdict))
    if run_id is not None:
        client = mlflow.tracking.MlflowClient()
        client.set_tag(run_id, "verdict", verdict["summary"])
        for kind, compared in (("loss", verdict["sets"]), ("similarity", verdict.get("answers", {}))):
            for name, v in compared.items():
                key = name.replace(" ", "_")
                for metric, value in (("difference", v["difference"]), ("ci_low", v["ci95"][0]),
                                      ("ci_high", v["ci95"][1])):
                    client.log_metric(run_id, f"verdict_{key}_{kind}_{metric}", round(value, 4))
        client.log_artifact(run_id, str(study_dir / "verdict.md"))
    print(f"medlora: verdict: {verdict['summary']} ({study_dir / 'verdict.md'})", file=sys.stderr)
