"""How the triage reads a message: one canonical spelling, and the pieces a long message is cut into.

People in a hurry drop apostrophes, capitals and punctuation, abbreviate (od, pls, rn, kms) and
mistype. :func:`normalise` maps all of that to one form, so the rules and the exemplars see
"i cannot breathe" for "I can't breathe", "i cant breathe" and "i cnat breath":

- lower case, one kind of apostrophe, then no apostrophes at all;
- contractions spelled out (``cant`` -> ``cannot``, ``im`` -> ``i am``);
- texting abbreviations spelled out (:data:`ABBREVIATIONS`);
- a word that is not an English word (not in the embedding model's vocabulary) and is one edit
  (insertion, deletion, substitution, swap) away from a word the triage cares about
  (:data:`KEY_WORDS`) becomes that word.

:func:`pieces` cuts a long message into sentences (and long sentences into overlapping word
windows), so that a red flag in the middle of a rambling message is judged on its own.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

CONTRACTIONS = {
    "cant": "cannot", "wont": "will not", "isnt": "is not", "arent": "are not", "wasnt": "was not",
    "dont": "do not", "doesnt": "does not", "didnt": "did not", "havent": "have not", "hasnt": "has not",
    "couldnt": "could not", "shouldnt": "should not", "wouldnt": "would not", "aint": "is not",
    "im": "i am", "ive": "i have", "ill": "i will", "hes": "he is", "shes": "she is", "theyre": "they are",
    "whats": "what is", "thats": "that is", "theres": "there is", "youre": "you are", "itll": "it will",
}
ABBREVIATIONS = {
    "od": "overdosed", "odd": "overdosed", "ods": "overdosed", "oded": "overdosed", "odeed": "overdosed",
    "rn": "right now", "pls": "please", "plz": "please", "u": "you", "ur": "your", "r": "are",
    "bf": "boyfriend", "gf": "girlfriend", "bro": "brother", "sis": "sister", "mum": "mom", "mam": "mom",
    "kms": "kill myself", "kys": "kill yourself", "sh": "self harm", "idk": "i do not know", "w": "with",
    "tonite": "tonight", "yr": "year", "yrs": "years", "yo": "year old", "mins": "minutes", "min": "minutes",
    "bc": "because", "cuz": "because", "abt": "about", "wanna": "want to", "gonna": "going to",
    "gotta": "have to", "tbh": "to be honest", "ngl": "not going to lie", "fr": "for real", "wat": "what",
    "meds": "medicine", "bp": "blood pressure", "er": "emergency room", "hr": "hour", "hrs": "hours",
    "xans": "xanax", "kil": "kill", "percs": "percocet", "unalive": "kill", "unaliving": "killing",
}
KEY_WORDS = frozenset("""
breathe breathing breath cannot choking choked seizure seizures unresponsive responding responsive
unconscious collapsed fainted passed bleeding blood vomiting throwing chest pain heart attack stroke
drooping slurred numb swelling throat tongue lips blue floppy limp awake wake waking
swallowed swallow overdose overdosed pills tablets poison poisoned bleach battery drank drink alcohol
insulin tylenol acetaminophen paracetamol ibuprofen aspirin heroin fentanyl oxycodone codeine
suicide suicidal myself kill killing die dying dead alive living life end ending hurt hurting harm
cutting baby babies newborn infant toddler daughter son child children kid kids friend husband
tonight think thinking having going want breathing help please stopped double dose missed forgot
warfarin blood thinner stop stopping quit antidepressant sleeping xanax valium ambien
""".split())
_TARGETS = KEY_WORDS | {w for w in (*CONTRACTIONS, *ABBREVIATIONS) if len(w) >= 4}
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "`": "'", "\u00b4": "'"})


@lru_cache(maxsize=1)
def _english_words() -> frozenset[str]:
    """The whole words of all-MiniLM-L6-v2's WordPiece vocabulary (lower case): correctly spelled."""
    from tokenizers import Tokenizer

    from medlora.models.embeddings import model_dir

    vocab = Tokenizer.from_file(str(model_dir() / "tokenizer.json")).get_vocab()
    return frozenset(w for w in vocab if w.isalpha() and not w.startswith("##"))


def _one_edit(a: str, b: str) -> bool:
    """True when ``a`` and ``b`` differ by one insertion, deletion, substitution or swap of neighbours."""
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diff = [i for i in range(len(a)) if a[i] != b[i]]
        return len(diff) == 1 or (len(diff) == 2 and diff[1] == diff[0] + 1
                                  and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]])
    short, long = sorted((a, b), key=len)
    return any(long[:i] + long[i + 1:] == short for i in range(len(long)))


@lru_cache(maxsize=4096)
def _spell(word: str) -> str:
    if word in _TARGETS or len(word) < 3 or not word.isalpha() or word in _english_words():
        return word
    near = sorted(k for k in _TARGETS if _one_edit(word, k))
    return near[0] if len(near) == 1 else word  # ambiguous or nothing near: leave it


def normalise(text: str) -> str:
    """The canonical spelling of ``text``: lower case, words and single spaces only (see the module docstring)."""
    text = unicodedata.normalize("NFKC", text).translate(_APOSTROPHES).lower()
    text = re.sub(r"(\w)'(\w)", r"\1\2", text)  # can't -> cant, od'd -> odd
    words = re.findall(r"[a-z0-9]+", text)
    out = []
    for word in words:
        word = _spell(word)
        out.append(CONTRACTIONS.get(word) or ABBREVIATIONS.get(word) or word)
    return " ".join(out)


def pieces(text: str, window: int = 14, stride: int = 10) -> list[str]:
    """``text`` cut into sentences, and sentences longer than ``window`` words into overlapping windows."""
    out = []
    for sentence in re.split(r"(?<=[.!?;,])\s+|\s+(?:and then|but|so|anyway)\s+", text.strip()):
        words = sentence.split()
        if len(words) <= window:
            out.append(sentence) if words else None
            continue
        for start in range(0, len(words) - window + stride, stride):
            out.append(" ".join(words[start : start + window]))
    return out
