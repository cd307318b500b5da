"""The safety triage as it was before issue 13 (a list of regular expressions), kept for ``bench/triage.py``.

A verbatim copy of the patterns and the ``triage`` function of ``src/medlora/answers/safety.py``
at commit 2bc7d48, so the benchmark can measure "before" and "after" side by side in one run.
It returns the red-flag class, or None; it knew nothing of risky questions.
"""

from __future__ import annotations

import re

# Who: the asker or someone with them right now.
_SOMEONE = r"(?:i|i'm|im|i am|i've|ive|my \w+|he|she|they|someone|somebody|(?:my|our|a) (?:baby|child|son|daughter|kid|toddler|infant))"
_NOW = r"(?:now|right now|just|suddenly|currently|can't|cannot|won't|isn't|is not|keeps?)"

PATTERNS: dict[str, list[str]] = {
    "self_harm": [
        r"\b(?:kill|hurt|harm|cut|hang|shoot|poison) (?:myself|my ?self)\b",
        r"\b(?:want|going|plan(?:ning)?|thinking|decided) (?:about |of )?(?:to )?(?:die|end (?:it|my life)|suicide|"
        r"commit suicide|kill myself)\b",
        r"\bi(?:'m| am)? (?:feeling )?suicidal\b",
        r"\bend(?:ing)? my (?:own )?life\b",
        r"\b(?:how many|how much|what dose|lethal dose|fatal dose).{0,40}\b(?:to|would) (?:die|kill (?:me|myself|someone))\b",
        r"\b(?:painless|easiest|quickest) way to (?:die|kill)\b",
        r"\bno reason to live\b",
    ],
    "overdose": [
        r"\b(?:i|he|she|they|my \w+|someone|somebody|(?:my|our|a) (?:baby|child|son|daughter|kid|toddler)) "
        r"(?:just |accidentally |may have |might have )?(?:took|taken|swallowed|drank|ate|overdosed|od'?d)\b.{0,40}"
        r"\b(?:too many|too much|whole (?:bottle|pack)|\d+ (?:pills|tablets|capsules)|bleach|poison|antifreeze|"
        r"detergent|pod|battery|batteries|overdose|pills)\b",
        r"\b(?:i|he|she|they|my \w+|someone) (?:overdosed|has overdosed|is overdosing|od'?d)\b",
        r"\boverdos(?:e|ed|ing) (?:on|right now|now)\b",
    ],
    "child": [
        r"\b(?:my|our|a|the) (?:baby|infant|newborn|toddler|child|kid|son|daughter)\b.{0,40}"
        r"\b(?:not breathing|stopped breathing|isn't breathing|is not breathing|unresponsive|won't wake|"
        r"turning blue|is blue|choking|having a seizure|fell|hit (?:his|her) head)\b",
        r"\b(?:shook|shake|shaking|hit|beat|beating|hurt|hurting|abus\w*) (?:my|our|the|a) "
        r"(?:baby|infant|child|kid|son|daughter|toddler)\b",
        r"\b(?:baby|child|kid) (?:is being|was) (?:abused|beaten|hurt)\b",
    ],
    "emergency": [
        rf"\b{_SOMEONE}\b.{{0,30}}\b(?:having|have|has|with|got|feel|feels|feeling)\b.{{0,20}}\b(?:crushing |severe |sudden )?"
        r"(?:chest pain|heart attack|stroke)\b",
        rf"\b{_SOMEONE}\b.{{0,20}}\b(?:can't|cannot|can not|is not|isn't|am not|not) (?:breathe|breathing)\b",
        rf"\b{_SOMEONE}\b.{{0,20}}\b(?:passed out|collapsed|is unconscious|unresponsive|won't wake up|is not waking)\b",
        rf"\b{_SOMEONE}\b.{{0,20}}\b(?:is |am )?(?:bleeding (?:heavily|a lot|badly|won't stop)|coughing up blood|"
        r"vomiting blood)\b",
        rf"\b{_SOMEONE}\b.{{0,30}}\b(?:face is drooping|slurred speech|slurring|can't move (?:my|his|her|their) "
        r"(?:arm|leg|side))\b",
        rf"\b{_SOMEONE}\b.{{0,30}}\b(?:anaphyla\w+)\b",
        r"\b(?:my|his|her|their) (?:throat|tongue|lips?|face) (?:is |are )?(?:closing|swelling)\b",
        rf"\b{_SOMEONE}\b.{{0,20}}\b(?:is having|having|has had) a seizure\b",
        r"\b(?:worst headache of my life)\b",
        rf"\b{_NOW}\b.{{0,10}}\b(?:can't breathe|chest pain)\b",
    ],
}
_COMPILED = {kind: [re.compile(p, re.IGNORECASE) for p in patterns] for kind, patterns in PATTERNS.items()}


def triage(question: str) -> str | None:
    text = " ".join(question.replace("’", "'").split())
    for kind, patterns in _COMPILED.items():  # self-harm first: the most specific help
        if any(p.search(text) for p in patterns):
            return kind
    return None
