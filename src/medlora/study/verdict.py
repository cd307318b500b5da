"""The study's verdict: is its champion better than its baseline (trial 0, the configuration as it
stands), by more than the noise?

Both trials' best adapters are scored question by question on two sets neither was chosen on:

- ``fresh validation``: valid-split questions *after* the study's fixed validation subset (the
  subset ranked the trials, so the champion's loss there is biased low: the winner's curse);
- ``test``: the held-out test split, the same seeded sample as ``medlora evaluate`` (evaluate.questions).

The difference (champion - baseline, mean answer-token loss per question) gets a 95% paired bootstrap
interval over questions. "better" means the whole interval is below 0. Written to
``<study dir>/verdict.json`` and ``verdict.md``, logged to the study's MLflow parent run, printed.
"""

from __future__ import annotations

import json
import sys

import mlflow
import optuna

from medlora.config import RunConfig
from medlora.data import splits
from medlora.data.questions import test_sample
from medlora.files import temporary_dir, write_file
from medlora.models.generation import load_with_adapter
from medlora.study import report
from medlora.training.batches import shuffled_valid
from medlora.training.heldout import paired_bootstrap, per_question_losses

FRESH_VALIDATION = 64  # valid-split questions after the study's own validation subset (~0.6 s each per adapter)


def pick(study: optuna.Study):
    """(champion, baseline): the best complete trial and the complete trial 0 marked baseline, or None each."""
    baseline = next((t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
                     if t.user_attrs.get("baseline")), None)
    return report.best_trial(study), baseline


def held_out_sets(cfg: RunConfig) -> dict[str, list[dict]]:
    """The fresh validation questions and the test sample (the valid split shuffled as training does)."""
    valid = shuffled_valid(cfg, splits.prepare_from_config(cfg.data, cfg.paths.processed))
    fresh = valid[cfg.train.val_examples: cfg.train.val_examples + FRESH_VALIDATION]
    return {"fresh validation": fresh, "test": test_sample(cfg)}


def adapter_losses(cfg: RunConfig, run_id: str, sets: dict[str, list[dict]]) -> dict:
    """Per-question losses of one trial's best adapter on each set."""
    with temporary_dir("verdict") as tmp:
        folder = mlflow.artifacts.download_artifacts(f"runs:/{run_id}/adapters/best", dst_path=str(tmp))
        model, tokenizer = load_with_adapter(cfg, folder)
    return {name: per_question_losses(cfg, model, tokenizer, records) for name, records in sets.items()}


def spent(study: optuna.Study) -> dict:
    """What the search cost: configurations tried, per hour, tokens trained by complete trials, and (with a
    fidelity, where a trial's last report is the examples it had seen) examples trained by all trials."""
    trials = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished() and t.datetime_complete]
    if not trials:
        return {}
    hours = (max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)).total_seconds() / 3600
    examples = [max(t.intermediate_values, default=0) for t in trials]
    states = [t.state.name for t in trials]
    return {"configurations": len(trials), "complete": states.count("COMPLETE"), "pruned": states.count("PRUNED"),
            "per_hour": round(len(trials) / hours, 1) if hours > 0 else None,
            "last_reported_step_sum": int(sum(examples)),
            "trained_tokens_of_complete": int(sum(t.user_attrs.get("trained_tokens", 0) for t in trials))}


def judge(cfg: RunConfig, study: optuna.Study) -> dict | None:
    """Score champion and baseline; return the verdict (None when there is no complete baseline or champion)."""
    champion, baseline = pick(study)
    if champion is None or baseline is None:
        return None
    verdict = {"champion_trial": champion.number, "baseline_trial": baseline.number,
               "champion_params": champion.params, "baseline_params": baseline.params,
               "champion_best_iteration": champion.user_attrs.get("best_iteration"),
               "search": spent(study), "sets": {}}
    if champion.number == baseline.number:
        verdict["summary"] = "the champion is the baseline: the study found no better configuration"
        return verdict
    sets = held_out_sets(cfg)
    print(f"medlora: verdict: trial {champion.number} vs baseline trial {baseline.number} on "
          + ", ".join(f"{len(r)} {n} questions" for n, r in sets.items()), file=sys.stderr)
    ours = adapter_losses(cfg, champion.user_attrs["run_id"], sets)
    theirs = adapter_losses(cfg, baseline.user_attrs["run_id"], sets)
    for name in sets:
        diff, lo, hi = paired_bootstrap(ours[name], theirs[name])
        verdict["sets"][name] = {"questions": len(sets[name]), "champion_loss": float(ours[name].mean()),
                                 "baseline_loss": float(theirs[name].mean()), "difference": diff,
                                 "ci95": [lo, hi], "better": bool(hi < 0), "worse": bool(lo > 0)}
    better = [n for n, v in verdict["sets"].items() if v["better"]]
    worse = [n for n, v in verdict["sets"].items() if v["worse"]]
    verdict["summary"] = (
        f"trial {champion.number} beats the baseline on {' and '.join(better)} loss beyond the noise" if better
        else f"trial {champion.number} is not better than the baseline beyond the noise"
    ) + (f"; it is worse on {' and '.join(worse)} loss" if worse else "")
    return verdict


def markdown(verdict: dict) -> str:
    lines = [f"# Verdict: {verdict['summary']}", "",
             f"champion trial {verdict['champion_trial']}: {verdict['champion_params']}  ",
             f"baseline trial {verdict['baseline_trial']}: {verdict['baseline_params']}", ""]
    if verdict.get("search"):
        k = verdict["search"]
        lines += [f"Search: {k['configurations']} configurations ({k['complete']} complete, {k['pruned']} pruned), "
                  f"{k['per_hour']} per hour; the champion's best step: iteration "
                  f"{verdict.get('champion_best_iteration')}.", ""]
    if verdict["sets"]:
        lines += ["| set | questions | champion loss | baseline loss | difference | 95% interval | better |",
                  "|---|---|---|---|---|---|---|"]
        for name, v in verdict["sets"].items():
            lines.append(f"| {name} | {v['questions']} | {v['champion_loss']:.4f} | {v['baseline_loss']:.4f} | "
                         f"{v['difference']:+.4f} | [{v['ci95'][0]:+.4f}, {v['ci95'][1]:+.4f}] | "
                         f"{'yes' if v['better'] else 'no'} |")
        lines += ["", "Losses: mean answer-token cross-entropy per question; interval: paired bootstrap over "
                  "questions (2,000 resamples)."]
    return "\n".join(lines) + "\n"


def record(verdict: dict, study_dir, run_id: str | None) -> None:
    """verdict.json and verdict.md in the study folder, metrics on the parent run, the summary printed."""
    write_file(study_dir / "verdict.json", json.dumps(verdict, indent=2, default=str))
    write_file(study_dir / "verdict.md", markdown(verdict))
    if run_id is not None:
        client = mlflow.tracking.MlflowClient()
        client.set_tag(run_id, "verdict", verdict["summary"])
        for name, v in verdict["sets"].items():
            key = name.replace(" ", "_")
            for metric, value in (("difference", v["difference"]), ("ci_low", v["ci95"][0]),
                                  ("ci_high", v["ci95"][1])):
                client.log_metric(run_id, f"verdict_{key}_loss_{metric}", round(value, 4))
        client.log_artifact(run_id, str(study_dir / "verdict.md"))
    print(f"medlora: verdict: {verdict['summary']} ({study_dir / 'verdict.md'})", file=sys.stderr)
