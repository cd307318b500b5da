"""The check a generated answer to a risky question must pass: it must not give the dangerous instruction.

A risky question ("can I take two warfarin today, I missed yesterday's?") gets a fixed caution
line before the generated answer, and the answer is read for the instruction the question
invites: doubling a dose, going over the label, stopping a prescribed medicine, drinking with
a sedative, taking someone else's medicine or mixing medicines. A sentence that gives one,
and does not negate it ("do not", "never", "avoid" within the few words before), fails the
check, and the answer is withheld.

Limits, by construction: it reads English words, not meaning. It misses an instruction phrased
in a way none of :data:`INSTRUCTIONS` foresees ("a second tablet tonight will make up for it"),
it cannot compare a number of milligrams with a label it does not know, and it may withhold a
safe answer that quotes the dangerous advice in order to refute it without a negation nearby.
"""

from __future__ import annotations

import re

from medlora.answers.triage.text import normalise

_OK = r"(?:generally |completely |perfectly |usually |totally )?(?:ok|okay|fine|safe|alright|all right|no problem)"
INSTRUCTIONS: dict[str, list[str]] = {
    "double_dose": [
        r"\b(?:take|taking|have) (?:a |the )?(?:double|two doses|2 doses|twice the|an extra dose|extra dose|both doses|"
        r"two tablets|two pills|the missed dose and the next)\b",
        r"\bdouble (?:up|your dose|the dose|the next dose)\b", r"\bmake up for (?:it|the missed dose) by\b",
        r"\b(?:you need to|you should|you can) take (?:\w+ ){0,4}twice\b",
    ],
    "dose_above_label": [
        rf"\b(?:it is|its|that is|should be) {_OK} to (?:take|exceed|go over|use) "
        r"(?:more|double|extra|a few more|\d+)\b",
        r"\b(?:you can|you may|feel free to) (?:take|exceed|go over|use) (?:more than|double|extra|as many|as much)\b",
        r"\b(?:exceed|exceeding|go over|going over) the (?:recommended|label|labelled|maximum|prescribed|daily)\b",
    ],
    "stop_medicine": [
        rf"\b(?:you can|you may|it is {_OK} to|its {_OK} to|feel free to|go ahead and|just|simply) "
        r"(?:stop|quit|come off)\b",
        r"^(?:stop|quit) taking (?:it|them|your|the)\b", r"\bno need to (?:keep taking|continue|take)\b",
    ],
    "alcohol_mix": [
        rf"\b(?:it is|its|should be) {_OK} to (?:drink|consume alcohol|have (?:a|some|one|a few) \w+|mix|combine)\b",
        r"\b(?:you can|you may|feel free to) (?:drink|have a drink|have a few drinks|mix|combine)\b",
        rf"\b(?:a few|one or two|a couple of|moderate) (?:drinks?|beers?|glasses) (?:is|are|should be) {_OK}\b",
    ],
    "drug_mix": [
        rf"\b(?:it is {_OK} to|its {_OK} to|you can|you may) (?:take|use|share|borrow) (?:\w+ )?(?:someone elses|"
        r"your (?:friends|wifes|husbands|partners|moms|dads|roommates)|their)\b",
        rf"\b(?:it is {_OK} to|its {_OK} to|you can|you may) (?:take|use) (?:them|both)(?: together)?\b",
    ],
}
NEGATION = re.compile(r"\b(?:not|never|no|avoid|nor|without|instead of|rather than|unless)\b(?: \w+){0,4}$")
_COMPILED = {kind: [re.compile(p) for p in ps] for kind, ps in INSTRUCTIONS.items()}


def dangerous_instruction(answer: str) -> str | None:
    """The kind of dangerous instruction ``answer`` gives (see the module docstring), or None."""
    for sentence in re.split(r"(?<=[.!?;:])\s+|\n+", answer):
        text = normalise(sentence)
        for kind, patterns in _COMPILED.items():
            for pattern in patterns:
                for match in pattern.finditer(text):
                    if not NEGATION.search(text[: match.start()].strip()):
                        return kind
    return None
