"""The triage's rules: red-flag *situations* as regular expressions over the normalised text.

They read :func:`medlora.answers.triage.text.normalise`'s output ("i cannot breathe", "my friend
overdosed") and look for a state someone is in ("is not breathing", "took too many", "want to
kill myself"), built from the phrase classes of :mod:`.lexicon`, not for a topic: "what are the
symptoms of a heart attack" matches nothing.

Each clause is read on its own. A clause is *guarded* (its emergency, overdose and child hits are
ignored) when it is hypothetical or general ("if someone is choking", "why do babies stop
breathing", "can a panic attack feel like you cannot breathe") or about the distant past ("two
years ago", "last month"). Self-harm hits ignore the past (a past attempt with thoughts now is
still a red flag) and method-seeking hits ignore generality ("the most painless way to die").
"""

from __future__ import annotations

import re

from medlora.answers.triage.lexicon import (ALLERGY, BLEEDING, BREATHING, CARDIAC, CHILD, COLOUR, INGESTED,
                                            MEDS, NEURO, OTHER_URGENT, POISONS, SEIZURE, TOO_MUCH, TRAUMA,
                                            UNRESPONSIVE, alt)

ACUTE = alt(BREATHING, UNRESPONSIVE, COLOUR, SEIZURE, BLEEDING, NEURO, CARDIAC, ALLERGY, TRAUMA, OTHER_URGENT,
            r"(?:is|are|am|keeps|baby|toddler|son|daughter|sister|dad|mom|husband|wife|he|she|"
            r"i) (?:\w+ )?choking(?! hazard)",
            r"(?:is|are|am) having (?:a |an )?(?:heart attack|hart attack|stroke|stoke|asthma attack|"
            r"allergic reaction|anaphylactic)",
            r"think (?:\w+ ){0,3}(?:having|had) (?:a |an )?(?:heart attack|hart attack|stroke|stoke)",
            r"asthma attack (?:\w+ ){0,4}inhaler (?:\w+ ){0,2}(?:not|is not)")
INTENT = alt("want", "wants", "wanted", "wanting", "wanna", "going", "plan", "plans", "planning", "keeps saying",
             "said", "says", "told me", "talks about", "talking about", "threatening", "threatened", "thinking",
             "think", "thought", "decided", "ready", "tempted", "urge", "wish", "scared", "afraid", "feel like",
             "could")
DEATH = alt("just be done", "die", "feel like dying", "want to be dying", "be dead",
            r"end (?:it|it all|my life|my lfe|things|my own life)",
            r"(?:kill|killing) (?:himself|herself|themselves)",
            r"(?:take|taking|end|ending) (?:his|her|their) (?:own )?life", r"ending (?:it|it all|my life|things)",
            "suicide", "sucide", "kill myself", "killing myself", r"take my (?:own )?life",
            r"taking my (?:own )?life", "not wake up", "never wake up", "hurt myself", "hurting myself",
            "disappear forever", "not exist", "not be alive", "out of life", "make myself die",
            "do something to myself", "it all to end", "hurt my body", "go and not come back", "end it myself",
            r"jump (?:off|from|in front of) (?:a |the )?(?:bridge|building|roof|cliff|train|balcony|tower)",
            r"(?:drive|driving|crash|crashing) (?:my|the) car into", "leave the engine running")

RULES: dict[str, list[str]] = {
    "self_harm": [
        r"\b(?:kill|killing|hurt|hurting|harm|harming|cut|cutting|hang|hanging|shoot|shooting|starve|starving|burn|"
        r"burning|drown|poison|punching walls and burning) (?:myself|my self|himself|herself|themselves)\b|\b(?:cut|"
        r"cutting|slit|slitting|slashing) (?:my|his|her) (?:wrists?|arms?|legs?|thighs?|skin)\b",
        rf"\b{INTENT} (?:\w+ ){{0,3}}(?:to |of |about )?{DEATH}\b|\bwish i could (?:\w+ ){{0,4}}never wake up\b|"
        rf"\b{INTENT} (?:\w+ ){{0,3}}(?:to )?(?:take|taking|swallow) all (?:\w+ ){{0,3}}{MEDS}",
        r"\b(?:i am|feel|feeling|been|is|was|am|im) (?:\w+ ){0,2}suicidal\b|\b(?:i have|having|my) thoughts? (?:of|"
        r"about) (?:suicide|killing myself|ending)\b|\bthinking (?:\w+ ){0,2}(?:suicide|sucide)\b",
        r"\b(?:wish i (?:was|were) (?:dead|not alive)|better (?:off )?without me|better off if (?:i|he|she) (?:was|"
        r"were) (?:not here|gone|dead)|no reason to live|no point (?:in )?living|tired of (?:living|life)|"
        r"do not want to (?:live|be alive|wake up|be here|exist|exsist)|want to die|kill myself|end my life|"
        r"self harm again|(?:scratching|bang|banging|hitting|punching|burning|biting) (?:\w+ ){0,8}(?:until|"
        r"till) (?:they|it|i) (?:bleed|bleeds|hurts|bruise)|cut deeper|(?:been|started|keep|keeps|is|"
        r"am) cutting (?:again|herself|himself|myself)|cutting again|hide (?:my|the|her|his) cuts|(?:goodbye|"
        r"suicide) (?:letter|note)|saying goodbye to everyone|giving away (?:his|her|my) (?:things|stuff)|"
        r"gave away my stuff|(?:pills|tablets) counted out|saving up my pills|bought a rope|going to do it|"
        r"join (?:her|him)|done with (?:life|living)|highest bridge|hit an artery|(?:scratch|scratching|cut|"
        r"cutting) (?:\w+ ){0,3}with a (?:razor|blade)|(?:hitting|punching|hurting) myself|want it all to end|"
        r"do not want to exsist|nothing (?:left )?to live for|disappear(?:ed)? for good|stop permanently|"
        r"just end it|attempted suicide (?:\w+ ){0,10}(?:again|same way))\b",
        r"\b(?:how many|how much|what dose|lethal dose|fatal dose|deadly|enough|how high|how far|"
        r"how long) (?:\w+ ){0,8}(?:to die|would kill (?:me|myself)|to kill (?:me|myself|yourself)|to not wake up|"
        r"not wake up|bleed out|be fatal|would be fatal|fatal for (?:me|someone my))\b",
        r"\b(?:least painful|painless|easiest|quickest|best|fastest|surest|reliable) way to (?:die|commit suicide|"
        r"kill (?:myself|yourself)|end (?:it|my life|my lfe|your (?:own )?life))\b|\bbleed out\b|"
        r"\bdoes it hurt to die\b|\b(?:hanging|pills|jumping) or (?:hanging|pills|jumping|a gun)\b|\b(?:burned|"
        r"burnt|cut|hurt) myself (?:\w+ ){0,4}again\b|\brelapsed on self harm\b|\bnote saying goodbye\b|\b(?:lethal|"
        r"fatal|deadly) (?:\w+ ){0,4}(?:i want|for me|make sure it works)\b|\bdie from (?:\w+ ){0,8}(?:for me|"
        r"i want)\b",
    ],
    "overdose": [
        r"\b(?:overdosed|overdosing|has overdosed|is overdosing)\b",
        r"\badult (?:strength|dose) (?:\w+ ){0,4}by mistake\b|\b(?:every day|daily) (?:\w+ ){0,3}instead of "
        r"(?:once a week|weekly)\b|\b(?:took|take|takes) (?:molly|mdma|ecstasy|ketamine|cocaine|meth)\b (?:\w+ ){0,6}"
        r"(?:shaking|hot|overheating|seizure|fitting|confused|not waking|will not wake)|\bdrink (?:the )?bleach\b|"
        r"\bstung by (?:a |an )?(?:\w+ )?(?:fish|stonefish|jellyfish|scorpion|box jellyfish)\b",
        rf"\b(?:took|taken|swallowed|drank|drunk|ate|eaten|chewed|injected|gave (?:myself|him|her|my \w+)) "
        rf"(?:\w+ ){{0,3}}{TOO_MUCH} (?:\w+ ){{0,5}}{MEDS}\b",
        rf"\b(?:took|taken|swallowed|drank|ate|injected|gave) (?:\w+ ){{0,3}}{MEDS} (?:\w+ ){{0,3}}(?:twice|at once|"
        rf"by mistake|instead of)\b|\bgave (?:him|her|them) someone elses\b|\b(?:took|"
        rf"swallowed) (?:\w+ ){{0,2}}(?:handful|bunch|whole bottle|all) of them\b|\bgot into (?:my|his|her|"
        rf"the) (?:pill|medicine|meds)|\bthink (?:its|it is) (?:heroin|fentanyl|drugs)\b",
        rf"\b{INGESTED} (?:\w+ ){{0,5}}{POISONS}\b|\b{POISONS} (?:\w+ ){{0,3}}in (?:his|her|their|my) mouth\b",
        rf"\b{CHILD} (?:\w+ ){{0,6}}{INGESTED} (?:\w+ ){{0,6}}(?:{MEDS}|wine|vodka|beer|alcohol|drink)\b",
        rf"\b{CHILD} (?:\w+ ){{0,6}}(?:found|got into) (?:\w+ ){{0,4}}{MEDS}\b",
        r"\b(?:injected|took|gave (?:myself|him|her)) (?:\w+ ){0,4}(?:insulin|units) (?:\w+ ){0,3}(?:twice|instead of|"
        r"too much|by mistake)\b|\b(?:too much|way too much) insulin\b|\binsulin twice\b",
        r"\b(?:bitten|bit|stung) by (?:a |an )?(?:\w+ )?(?:snake|rattlesnake|scorpion|spider|jellyfish)\b|"
        r"\bcarbon monoxide alarm\b|\bco alarm\b|\bgenerator indoors\b|\bmixed bleach and ammonia\b|"
        r"\b(?:took|drank|had) (?:\w+ ){0,3}(?:pills?|something) (?:at a (?:party|festival)|someone gave)\b",
        rf"\b(?:took|taken|swallowed|drank) (?:\w+ ){{0,3}}{MEDS} (?:\w+ ){{0,8}}{ACUTE}",
    ],
    "child": [
        rf"\b{CHILD} (?:\w+ ){{0,12}}{ACUTE}",
        rf"\b{CHILD} (?:\w+ ){{0,8}}(?:fell|fall|fallen|hit (?:his|her) head|rolled off) (?:\w+ ){{0,12}}(?:not acting "
        r"right|wake|sleepy|drowsy|vomiting|throwing up|confused|not moving|unconscious|slurring)",
        rf"\b(?:hits|hit|beats|beat|beating|shook|shake|shakes|shaking|hurts|hurt|hurting|touches|touched|abuses|"
        rf"abused|punches|kicks|locks|slapped|screams at) (?:\w+ ){{0,3}}(?:my|our|the|his|her|their|"
        rf"a) (?:\w+ )?{CHILD}",
        rf"\b{CHILD} (?:\w+ ){{0,4}}(?:is being|was being|being) (?:abused|beaten|hurt|hit|slapped)\b",
        r"\b(?:mom|mother|dad|daddy|father|stepdad|stepmom|boyfriend|uncle|teacher|adult|he) (?:\w+ ){0,3}(?:hits me|"
        r"beats me|touches me|touches her|touches him|touched me|comes into my room|hurts (?:him|her|me)|does things to"
        r" me)\b|\b(?:beats|hits) me and my\b",
        rf"\b(?:going to|might|could) (?:hurt|shake) (?:my|the) {CHILD}\b|\b{CHILD} (?:\w+ ){{0,4}}(?:is missing|"
        rf"walking alone on the highway|alone (?:\w+ ){{0,8}}fire|left alone)\b|\b(?:leaves|left|"
        rf"leaving) (?:\w+ ){{0,3}}(?:kids|children|baby|toddler) alone (?:\w+ ){{0,4}}(?:for days|all day|"
        rf"overnight)\b|\blocks me (?:\w+ ){{0,4}}(?:without food|for days)\b|\b(?:man|adult|stranger|"
        rf"someone) from the internet (?:\w+ ){{0,3}}(?:meet|see)\b|\btrying to get my (?:daughter|son)\b",
    ],
    "emergency": [
        rf"\b{ACUTE}",
        r"\b(?:call|calling) (?:an ambulance|911|999|112)\b",
    ],
}
RISKY: dict[str, list[str]] = {
    "double_dose": [
        r"\b(?:missed|miss|forgot|forgott|forget|skipped|skip|late|not take|did not take) (?:\w+ ){0,15}(?:double|"
        r"two|2|three|3|both|all|a bit extra|extra)\b(?! (?:hours?|minutes?|days?|weeks?) late)",
    ],
    "dose_above_label": [
        r"\b(?:take|taking|give|use|have) (?:\w+ ){0,3}(?:\d+|two|three|four|five|six|eight|ten|double|triple|more)"
        r" (?:\w+ ){0,4}(?:at once|at a time|in one go|instead of|to sleep|to make sure|than the|a day|times a day)\b",
        r"\b(?:ignore|over|above|more than|double|triple|doubling|tripling|go over) (?:\w+ ){0,2}(?:the )?(?:label|"
        r"recommended|prescribed|max|box says|maximum)\b|\badult dose\b|\b\d+ times the\b|\bevery 2 hours\b|"
        r"\b(?:doubling|tripling|double|triple) (?:or (?:doubling|tripling|triple) )?it\b|"
        r"\b\d{2,} ?mg (?:\w+ ){0,2}(?:ok|okay|safe|fine)\b|\b(?:can|could|should) (?:i|he|she|we) (?:take|give|"
        r"have|use) (?:\w+ ){0,2}(?:three|four|five|six|ten|[3-9]|\d{2,}|double|triple)\b(?! (?:times a|hours|days|"
        r"weeks|months|kg|kilos?|lbs?|pounds|years?))",
    ],
    "stop_medicine": [
        r"\b(?:stop|stopping|quit|quitting|come off|go off|stopped) (?:\w+ ){0,3}(?:my|his|her|the|all) (?:\w+ ){0,3}"
        r"(?:medicine|medication|medications|pills|antidepressants?|insulin|blood thinner|steroids|antibiotics|"
        r"statin|lithium|lexapro|xanax|beta blocker|prednisone|heart medicine|transplant)\b|\bcold turkey\b|"
        r"\b(?:decided to stop|stop it|will just stop|quitting it|stop it now)\b",
    ],
    "alcohol_mix": [
        r"\b(?:drink|drinking|alcohol|beers?|wine|vodka|whisky|whiskey|shots|booze|drinks|hangover|"
        r"alchol)\b.*\b(?:xanax|valium|ambien|zolpidem|oxycodone|oxycontin|codeine|codiene|percocet|vicodin|"
        r"tramadol|methadone|gabapentin|klonopin|lorazepam|muscle relaxer|sleeping (?:pills?|tablets)|benzo\w*|"
        r"opioids?|morphine|diazepam|alprazolam|hydrocodone|pain medicine|pill for sleep|tylenol)\b",
        r"\b(?:xanax|valium|ambien|zolpidem|oxycodone|oxycontin|codeine|percocet|vicodin|tramadol|methadone|"
        r"gabapentin|klonopin|lorazepam|muscle relaxer|sleeping (?:pills?|tablets)|opioids?|pill for sleep|tylenol|"
        r"acetaminophen|paracetamol)\b.*"
        r"\b(?:drink|drinking|alcohol|beers?|wine|vodka|whisky|shots|drinks)\b",
    ],
    "drug_mix": [
        r"\b(?:take|taking|use|mix|give|borrow|borrowing|share|try) (?:\w+ ){0,2}(?:my )?(?:wifes|husbands|moms|"
        r"dads|friends|roommates|partners|boyfriends|girlfriends|sisters|brothers|someone elses|"
        r"my own) (?:\w+ ){0,3}(?:pills|medicine|\w+)\b|\b(?:and|with) (?:\w+ ){0,3}together\b",
    ],
}
GUARDS = {
    "hypothetical": r"\b(?:if|when|whether|why do|why does) (?:\w+ ){0,3}(?:you|someone|somebody|a person|people|one|a "
                    r"child|a baby|babies|children|kids|your|in the future)\b|\b(?:for|with|help|about) (?:someone|"
                    r"somebody|a person|people|a patient)\b|\bin the future\b|\bhow (?:do|does|"
                    r"can|would|could) (?:\w+ ){0,2}(?:know|tell|recogni[sz]e|spot)\b|\bfeel like you\b|\bcan (?:a|an) "
                    r"\w+ (?:\w+ )?(?:feel|cause|make)\b",
    "reassured": r"\b(?:he|she|they|it) (?:is|are|seems?|looks?) (?:\w+ )?(?:fine|ok|okay|normal|alright|happy)\b|"
                 r"\b(?:playing|acting|eating|breathing) (?:normally|fine|normal)\b|\b(?:is|"
                 r"are) (?:\w+ and )?(?:playing|laughing|smiling)\b",
    "past": r"\b(?:\w+ )?(?:years?|months?) ago\b|\blast (?:year|month|winter|summer|spring|autumn|fall)\b|"
            r"\bin (?:college|march|april|may|june|july)\b|\bwhen i was\b|\bwas treated\b|\bas a child\b",
}
ABOUT = (r"^(?:what|how|why|who|which|where|is|are|can|does|do|should)\b",
         r"\b(?:i|me|my|we|our|us|he|she|his|her|him|they|them|their|hes|shes|im)\b")  # a question, nobody in it
_COMPILED = {name: [re.compile(p) for p in ps] for name, ps in RULES.items()}
_RISKY = {kind: [re.compile(p) for p in ps] for kind, ps in RISKY.items()}
_GUARDS = {name: re.compile(p) for name, p in GUARDS.items()}
_SPLIT = re.compile(r"\b(?:and then|but|so|because|anyway|then|although|though)\b")


def clauses(normalised: str) -> list[str]:
    """The clauses of a normalised message (split at "but", "so", "because", "anyway", ...)."""
    return [c.strip() for c in _SPLIT.split(normalised) if c.strip()]


def guards(clause: str) -> set[str]:
    """The guards (``hypothetical``, ``reassured``, ``past``, ``about``) that hold for a normalised clause."""
    found = {name for name, g in _GUARDS.items() if g.search(clause)}
    if re.search(ABOUT[0], clause) and not re.search(ABOUT[1], clause):
        found.add("about")
    return found


def _skip(name: str, guarded: set[str], pattern_index: int) -> bool:
    guarded = guarded - {"reassured"}  # for the semantic layer only: rules name a danger outright
    if name != "self_harm":
        return bool(guarded)
    return "hypothetical" in guarded and pattern_index < 4  # method-seeking (the last two) is never general


def hits(normalised: str) -> dict[str, str]:
    """``{class: the matched words}`` for the red-flag classes whose rules fire on ``normalised``."""
    found: dict[str, str] = {}
    for clause in clauses(normalised):
        guarded = guards(clause)
        for name, patterns in _COMPILED.items():
            for i, pattern in enumerate(patterns):
                if name in found or _skip(name, guarded, i):
                    continue
                match = pattern.search(clause)
                if match:
                    found[name] = match.group(0)
    return found


def risky_kind(normalised: str) -> str | None:
    """The kind of dangerous instruction a normalised question invites, by rule (None if no rule fires)."""
    for kind, patterns in _RISKY.items():
        if any(p.search(normalised) for p in patterns):
            return kind
    return None
