"""Safety triage before (a list of regular expressions) and after issue 13, side by side, in one run.

    .venv/bin/python bench/triage.py [--errors]

Sets:
- the **held-out half** of the labelled triage set (``tests/answers/data/triage_heldout.csv``),
  batch by batch: no threshold was chosen on it; batches 1-3 were written before the rules were
  last revised and the rules were revised on them; the later batches (other writers) never were
  (see ``src/medlora/answers/triage/README.md``);
- the **fresh batches** (``tests/answers/data/triage_fresh*.csv``): written by a writer whose
  phrasings are nowhere in the labelled set, without reading it or the rules, committed before the
  triage was first measured on them, never tuned on nor looked at for errors;
- the **tuning half** (``src/medlora/answers/triage/tuning.csv``): the rules were written on
  it, so its numbers are optimistic;
- the **MedQuAD test-split questions** of the default config (all ordinary);
- the **consumer set** (``src/medlora/data/consumer_questions.csv``, both halves): health messages as
  people write them, long and personal, none urgent (all ordinary), written for the fine-tuning
  study and never used by the triage.

Recall of a red-flag class: the share of its phrasings that get a red-flag message (any of the
four; "right message" is the share that gets its own class's). False alarms: the share of
ordinary phrasings that get a red-flag message (no answer); cautions: the share that get the
risky caution line (an answer, after a caution). "before" knew no risky class.
Latency: ``medlora.answers.safety.classify`` on each held-out question, one at a time, once
the embedding model and classifier are loaded (load time printed separately).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import medlora  # noqa: F401  (first: the fast BLAS before mlx)
from medlora.answers import safety
from medlora.answers.triage import labelled
from medlora.answers.triage.labelled import RED_FLAGS
from medlora.config import load_run_config
from medlora.data import splits

sys.path.insert(0, str(Path(__file__).parent))
import triage_before  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HELD_OUT = ROOT / "tests" / "answers" / "data" / "triage_heldout.csv"
FRESH = sorted((ROOT / "tests" / "answers" / "data").glob("triage_fresh*.csv"))
EXAMPLES = ["i cant breathe", "my baby isnt breathing", "My 2 year old swallowed some of my pills",
            "my friend od on heroin", "What are the symptoms of a heart attack?"]


def medquad_test_questions() -> list[str]:
    cfg = load_run_config([])
    records = splits.load_split(splits.prepare_from_config(cfg.data, cfg.paths.processed), "test")
    return [r["messages"][-2]["content"] for r in records]


def after(question: str) -> str:
    return safety.classify(question).label


def before(question: str) -> str:
    return triage_before.triage(question) or "ordinary"


def consumer_sets() -> list[tuple[str, list[labelled.Example]]]:
    """The consumer set's two halves (``medlora/data/consumer_questions.csv``): people's ordinary health
    messages, long and personal, written for the fine-tuning study, never fitted or tuned on by the triage."""
    from medlora.data.consumer import read_set

    rows = read_set()
    return [(f"consumer set, {half} half", [labelled.Example(i, "ordinary", "", "", "consumer", message)
                                            for i, message in zip(part["id"], part["message"])])
            for half in ("valid", "test") for part in [rows[rows["half"] == half]]]


def share(hits: list[bool]) -> str:
    return f"{sum(hits) / len(hits):.3f}" if hits else "-"


def row(name: str, method: str, rows: list[labelled.Example], predicted: list[str]) -> str:
    cells = []
    for c in RED_FLAGS:
        got = [p for r, p in zip(rows, predicted) if r.label == c]
        cells.append(f"{share([p in RED_FLAGS for p in got])} ({share([p == c for p in got])})")
    risky = [p for r, p in zip(rows, predicted) if r.label == "risky"]
    ordinary = [p for r, p in zip(rows, predicted) if r.label == "ordinary"]
    cautioned = share([p == "risky" for p in risky]) if method == "after" else "-"
    alarms = sum(p in RED_FLAGS for p in ordinary)
    cautions = f"{sum(p == 'risky' for p in ordinary)}/{len(ordinary)}" if method == "after" else "-"
    return f"| {name} | {method} | " + " | ".join(cells) + f" | {cautioned} | {alarms}/{len(ordinary)} " \
           f"({alarms / len(ordinary):.1%}) | {cautions} |"


def errors(rows: list[labelled.Example], predicted: list[str]) -> None:
    for r, p in zip(rows, predicted):
        wrong = (r.label in RED_FLAGS) != (p in RED_FLAGS) or (r.label == "risky") != (p == "risky")
        if wrong:
            print(f"  {r.label:>9} -> {p:<9} {r.text[:110]}")


def milliseconds(times: list[float]) -> str:
    times = sorted(times)
    return (f"median {statistics.median(times):.1f} ms, p95 {times[int(0.95 * len(times))]:.1f} ms, "
            f"max {times[-1]:.1f} ms")


def latency(questions: list[str]) -> str:
    start = time.perf_counter()
    safety.classify("warm up")
    load = time.perf_counter() - start
    times = {}
    for q in questions:
        start = time.perf_counter()
        safety.classify(q)
        times[q] = (time.perf_counter() - start) * 1000
    long = [t for q, t in times.items() if len(q.split()) > 30]
    return (f"per question, one at a time, {len(times)} held-out questions: {milliseconds(list(times.values()))}; "
            f"the {len(long)} longer than 30 words: {milliseconds(long)} "
            f"(loading the embedding model and classifier first: {load:.2f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--errors", action="store_true", help="list the held-out phrasings triaged wrongly")
    parser.add_argument("--fresh-errors", action="store_true",
                        help="list the fresh batches' phrasings triaged wrongly (looking makes them tuned on)")
    args = parser.parse_args()
    timing = latency([r.text for r in labelled.load(HELD_OUT)])  # first: nothing else warm in the process
    print("| set | triage | " + " | ".join(f"{c} recall (right message)" for c in RED_FLAGS)
          + " | risky cautioned | ordinary false alarms | ordinary cautioned |")
    print("|---" * (5 + len(RED_FLAGS)) + "|")
    held_out, tuning = labelled.load(HELD_OUT), labelled.load(labelled.TUNING_CSV)
    batches = sorted({r.batch for r in held_out}, key=lambda b: (not b.isdigit(), b))
    sets = [(f"held-out, batch {b}", [r for r in held_out if r.batch == b]) for b in batches]
    sets += [("held-out, all", held_out), ("tuning half", tuning)]
    sets[-1:-1] = [(f"fresh batch {p.stem.removeprefix('triage_fresh')}", labelled.load(p)) for p in FRESH]
    sets += consumer_sets()
    for name, rows in sets:
        for method, triage in (("before", before), ("after", after)):
            print(row(f"{name} ({len(rows)})", method, rows, [triage(r.text) for r in rows]))
    medquad = medquad_test_questions()
    for method, triage in (("before", before), ("after", after)):
        got = [triage(q) for q in medquad]
        alarms, cautions = sum(p in RED_FLAGS for p in got), sum(p == "risky" for p in got)
        print(f"| MedQuAD test questions ({len(medquad)}) | {method} | - | - | - | - | - | {alarms}/{len(medquad)} "
              f"({alarms / len(medquad):.2%}) | {cautions if method == 'after' else '-'} |")
    print("\nthe issue's examples:")
    for q in EXAMPLES:
        print(f"  {q!r}: before {before(q)}, after {after(q)}")
    print("\nlatency:", timing)
    if args.errors:
        rows = labelled.load(HELD_OUT)
        print("\nheld-out phrasings triaged wrongly (after):")
        errors(rows, [after(r.text) for r in rows])
    if args.fresh_errors:
        for path in FRESH:
            print(f"\n{path.name} phrasings triaged wrongly (after):")
            rows = labelled.load(path)
            errors(rows, [after(r.text) for r in rows])


if __name__ == "__main__":
    main()
