"""The safety triage of a question: normalisation, rules, a semantic layer, one decision, and the answer check.

    text      normalise (apostrophes, contractions, texting, typos) and cut long messages into pieces
    lexicon   the phrase classes the rules are built from
    rules     red-flag situations and risky questions as regular expressions, with their guards
    semantic  softmax classifier over sentence embeddings + hashed words (classifier.npz)
    decide    the one decision: rule hits and probabilities against one threshold per class
    check     the dangerous instructions a generated answer to a risky question must not give
    labelled  the labelled triage set (tuning.csv here; the held-out half under tests/) and its split
    fit       fits the classifier and chooses the thresholds on the tuning half

:mod:`medlora.answers.safety` puts them together behind ``triage(question)``.
"""
