"""The safety layer around every answer path: triage before an answer, a caution line and a check around it.

``triage(question)`` sorts a question into one of

- a **red flag** (an emergency now, an overdose or poisoning, suicide or self-harm, a child in
  danger): a fixed message sending the person to emergency services, a poison centre or a
  crisis line, never a generated answer;
- **risky but not urgent** (a dose above the label, doubling a blood thinner after a missed
  dose, stopping a prescribed medicine, alcohol with a sedative, someone else's medicine):
  a fixed caution line before the generated answer, and the answer is withheld if it gives the
  dangerous instruction (:func:`check_answer`);
- **ordinary** (None): the answer as generated.

The decision (:mod:`medlora.answers.triage`) reads the question normalised (apostrophes,
contractions, texting, typos), applies rules for red-flag *situations* (not topics: "What are
the symptoms of a heart attack?" is ordinary) and a classifier over its sentence embedding,
with one threshold per class. The embedding model is loaded once per process.
Every generated answer ends with a one-line notice that it is not medical advice.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from medlora.answers.triage import rules, semantic
from medlora.answers.triage.check import dangerous_instruction
from medlora.answers.triage.decide import Decision, decide
from medlora.answers.triage.labelled import RED_FLAGS, SCORES
from medlora.answers.triage.text import normalise
from medlora.errors import UserError

DISCLAIMER = "Not a substitute for professional medical advice: for a diagnosis or treatment, see a clinician."

EMERGENCY_NUMBER = "call your local emergency number now (911 in the US and Canada, 112 in the EU, 999 in the UK)"
POISON_CENTRE = "Poison Control (1-800-222-1222 in the US; elsewhere your local poison centre)"

MESSAGES = {
    "emergency": f"This sounds like it could be a medical emergency: {EMERGENCY_NUMBER}, or go to the nearest "
                 "emergency department. Do not wait for an answer from this tool.",
    "overdose": f"Possible overdose or poisoning: {EMERGENCY_NUMBER}, or call {POISON_CENTRE}. "
                "Do not wait for an answer from this tool.",
    "self_harm": "If you are thinking about suicide or hurting yourself, you are not alone: call or text 988 "
                 "(Suicide & Crisis Lifeline, US), call 116 123 (Samaritans, UK/Ireland) or your local crisis "
                 f"line. If you are in danger right now, {EMERGENCY_NUMBER}.",
    "child": f"A child may be in danger: {EMERGENCY_NUMBER}. To report abuse in the US call 1-800-422-4453 "
             "(Childhelp), elsewhere your local child protection service.",
}
_ASK = f"ask your clinician or pharmacist first, and if too much has already been taken call {POISON_CENTRE}."
CAUTIONS = {
    "dose_above_label": f"Caution: never take more than the label or your prescriber says; {_ASK}",
    "double_dose": "Caution: do not double a dose to make up for a missed one (with a blood thinner it can cause "
                   f"serious bleeding); {_ASK}",
    "stop_medicine": "Caution: do not stop a prescribed medicine on your own, some are dangerous to stop "
                     f"suddenly; {_ASK}",
    "alcohol_mix": "Caution: alcohol with sleeping pills, sedatives, opioids or anxiety medicines can stop your "
                   f"breathing; {_ASK}",
    "drug_mix": f"Caution: do not take someone else's prescription or combine medicines without advice; {_ASK}",
}
WITHHELD = ("The generated answer was withheld: it appeared to advise {what}, which can be dangerous. "
            "Ask your clinician or pharmacist.")
_WHAT = {"double_dose": "doubling a dose", "dose_above_label": "a dose above the label",
         "stop_medicine": "stopping a prescribed medicine", "alcohol_mix": "drinking alcohol with a sedative",
         "drug_mix": "taking someone else's or mixed medicines"}


@dataclass(frozen=True)
class Triage:
    kind: str  # "self_harm" | "overdose" | "child" | "emergency" | "risky"
    message: str  # the triage message, or for "risky" the caution line shown before the answer
    risk: str | None = None  # for "risky": the dangerous instruction the question invites

    @property
    def urgent(self) -> bool:
        """A red flag: the message replaces the answer."""
        return self.kind in RED_FLAGS


@lru_cache(maxsize=1)
def _semantic_layer() -> tuple[semantic.Classifier, semantic.Features]:
    """The fitted classifier and the embedding model, loaded once per process."""
    from medlora.models.embeddings import SentenceEmbedder

    classifier = semantic.Classifier.load()
    if classifier.tuning_sha256 != semantic.tuning_digest():
        raise UserError("the triage classifier was fitted on another tuning.csv than the one installed "
                        "(fix: python -m medlora.answers.triage.fit)")
    return classifier, semantic.embedder_features(SentenceEmbedder.load())


def classify(question: str) -> Decision:
    """The triage decision for ``question``, with the score per class (see :mod:`.triage.decide`).

    When a red-flag rule fires, its score (1) decides whatever the classifier says, so the
    embedding is not computed (its scores are reported as 0): a long message costs time only
    when it needs the semantic layer."""
    classifier, features = _semantic_layer()
    text = normalise(question)
    hits = rules.hits(text)
    scores = np.zeros(len(SCORES)) if hits else semantic.scores(classifier, features, question)
    return decide(hits, rules.risky_kind(text), scores, classifier.thresholds,
                  lambda: semantic.risky_kind(classifier, features, question))


def triage(question: str) -> Triage | None:
    """The triage of ``question``: a red flag's message, a risky question's caution line, or None."""
    decision = classify(question)
    if decision.label in RED_FLAGS:
        return Triage(decision.label, MESSAGES[decision.label])
    if decision.label == "risky":
        return Triage("risky", CAUTIONS[decision.kind], decision.kind)
    return None


def check_answer(answer: str) -> str:
    """``answer`` itself, or a withheld notice when it gives a dangerous instruction (:mod:`.triage.check`)."""
    kind = dangerous_instruction(answer)
    return answer if kind is None else WITHHELD.format(what=_WHAT[kind])


def guarded_answer(flag: Triage, answer: str) -> str:
    """What a risky question gets: the caution line, then the checked answer."""
    return f"{flag.message}\n\n{check_answer(answer)}"
