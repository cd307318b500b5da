"""The one place a triage decision is made: rule hits and semantic probabilities, one threshold per class.

Each red-flag class gets a score: 1 when one of its rules fired (:mod:`.rules`), else its semantic
probability (:mod:`.semantic`). The classes whose score reaches their threshold are flagged; the
highest score wins, ties going to the earlier class in :data:`RED_FLAGS` (overdose, self-harm,
child, emergency: the more specific help first). When no class reaches its threshold but the
total red-flag probability (``red_flag``) reaches its own, the most probable red-flag class is
given. With no red flag, a question is *risky* when a
risky rule fires or its risky probability reaches the risky threshold; otherwise it is ordinary.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from medlora.answers.triage.labelled import RED_FLAGS, SCORES


@dataclass(frozen=True)
class Decision:
    label: str  # one of labelled.CLASSES
    kind: str | None = None  # for "risky": which dangerous instruction the question invites
    scores: dict[str, float] = field(default_factory=dict)  # the score per class that was compared


def decide(rule_hits: dict[str, str], risky_rule: str | None, probabilities, thresholds: dict[str, float],
           kind_of_risky=lambda: None) -> Decision:
    """The triage decision (see the module docstring). ``kind_of_risky()`` names the kind when no rule did."""
    p = dict(zip(SCORES, (float(v) for v in probabilities)))
    score = {c: 1.0 if c in rule_hits else p[c] for c in RED_FLAGS}
    score["red_flag"] = p["red_flag"]
    score["risky"] = 1.0 if risky_rule else p["risky"]
    flagged = [c for c in RED_FLAGS if score[c] >= thresholds[c]]
    if flagged:
        return Decision(max(flagged, key=lambda c: (score[c], -RED_FLAGS.index(c))), None, score)
    if score["red_flag"] >= thresholds["red_flag"]:
        return Decision(max(RED_FLAGS, key=lambda c: (p[c], -RED_FLAGS.index(c))), None, score)
    if score["risky"] >= thresholds["risky"]:
        return Decision("risky", risky_rule or kind_of_risky(), score)
    return Decision("ordinary", None, score)
