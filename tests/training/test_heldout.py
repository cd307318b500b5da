"""Per-question held-out losses: in the records' order, independent of batching, answer tokens only."""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from medlora.config import load_run_config
from medlora.data.tokenize import encode_chats
from medlora.models.load import load_model
from medlora.training.heldout import per_question_losses


def _chat(question: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


RECORDS = [_chat("What is glaucoma?", "Glaucoma is a group of eye diseases that damage the optic nerve."),
           _chat("What causes gout?", "Uric acid crystals."),
           _chat("How is asthma treated?", "With inhalers that open the airways and calm inflammation, "
                 "taken every day or when symptoms start."),
           _chat("Is anemia inherited?", "Some kinds are."),
           _chat("What is a stroke?", "Blood flow to part of the brain stops.")]


def test_each_question_gets_its_own_loss_whatever_the_batch(model_cache):
    cfg = load_run_config(["model=tiny_random", f"paths.models={model_cache}", "train.max_seq_length=64"])
    model, tokenizer = load_model(cfg.model, cfg.paths.models)
    batched = per_question_losses(cfg, model, tokenizer, RECORDS, batch_size=4)
    alone = np.array([per_question_losses(cfg, model, tokenizer, [r], batch_size=1)[0] for r in RECORDS])
    assert batched == pytest.approx(alone, rel=1e-4)  # padding and neighbours change nothing
    # by hand for the second record: cross-entropy of each answer token given what precedes it
    ids, offset = encode_chats([RECORDS[1]], tokenizer, mask_prompt=True, max_seq_length=64)[0]
    logits = model(mx.array([ids[:-1]])).astype(mx.float32)
    ce = nn.losses.cross_entropy(logits, mx.array([ids[1:]]))[0]
    assert batched[1] == pytest.approx(float(ce[offset - 1:].mean()), rel=1e-4)
    assert len(set(np.round(batched, 6))) == len(RECORDS) and all(math.isfinite(v) for v in batched)
