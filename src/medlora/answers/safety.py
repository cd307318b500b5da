"""The safety layer around every answer path.

Red-flag questions (an emergency happening now, an overdose or poisoning,
suicide or self-harm, a child in danger) get a fixed triage message that sends
the person to emergency services or a crisis line, never a generated answer.
Every generated answer ends with a one-line notice that it is not medical advice.

The patterns look for a *situation* (first person, someone present, "now",
intent), not for a topic: "What are the symptoms of a heart attack?" is an
ordinary question; "I have crushing chest pain" is not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DISCLAIMER = "Not a substitute for professional medical advice: for a diagnosis or treatment, see a clinician."

EMERGENCY_NUMBER = "call your local emergency number now (911 in the US and Canada, 112 in the EU, 999 in the UK)"

MESSAGES = {
    "emergency": f"This sounds like it could be a medical emergency: {EMERGENCY_NUMBER}, or go to the nearest "
                 "emergency department. Do not wait for an answer from this tool.",
    "overdose": f"Possible overdose or poisoning: {EMERGENCY_NUMBER}, or call Poison Control (1-800-222-1222 in "
                "the US; elsewhere your local poison centre). Do not wait for an answer from this tool.",
    "self_harm": "If you are thinking about suicide or hurting yourself, you are not alone: call or text 988 "
                 "(Suicide & Crisis Lifeline, US), call 116 123 (Samaritans, UK/Ireland) or your local crisis "
                 f"line. If you are in danger right now, {EMERGENCY_NUMBER}.",
    "child": f"A child may be in danger: {EMERGENCY_NUMBER}. To report abuse in the US call 1-800-422-4453 "
             "(Childhelp), elsewhere your local child protection service.",
}

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


@dataclass(frozen=True)
class Triage:
    kind: str  # "self_harm" | "overdose" | "child" | "emergency"
    message: str


def triage(question: str) -> Triage | None:
    """The triage message for a red-flag question, or None for an ordinary one."""
    text = " ".join(question.replace("’", "'").split())
    for kind, patterns in _COMPILED.items():  # self-harm first: the most specific help
        if any(p.search(text) for p in patterns):
            return Triage(kind, MESSAGES[kind])
    return None
