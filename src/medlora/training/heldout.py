"""Per-question losses on held-out records, for comparisons that come with their uncertainty.

mlx-lm's ``evaluate`` returns one number for a whole set. To say whether one adapter is better
than another by more than the noise, each question's own loss is needed (its mean answer-token
cross-entropy, truncated like training, with the training loss function), so that the difference
can be bootstrapped over questions (:func:`paired_bootstrap`).
"""

from __future__ import annotations

from collections.abc import Sequence

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from medlora.config import RunConfig
from medlora.data.tokenize import encode_chats
from medlora.models.fastmath import fast_kernels
from medlora.training.loss import project, supports_answer_only


def per_question_losses(cfg: RunConfig, model, tokenizer, records: Sequence[dict], batch_size: int = 4) -> np.ndarray:
    """Each record's mean answer-token loss, in the records' order (no answer token left after truncation: NaN).

    The positions scored are those of mlx-lm's ``default_loss`` (after the prompt, up to the
    example's length, cut at ``train.max_seq_length``); batches are padded here, in order, rather
    than by mlx-lm's batcher, which sorts by length."""
    dataset = encode_chats(list(records), tokenizer, mask_prompt=cfg.train.mask_prompt,
                           max_seq_length=cfg.train.max_seq_length, truncation=cfg.train.truncation)
    model.eval()
    out = []
    with fast_kernels(model, cfg.train.fast_math):
        for start in range(0, len(dataset), batch_size):
            rows = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
            out.extend(_batch_losses(model, rows, cfg.train.max_seq_length))
    return np.array(out)


def _batch_losses(model, rows: list[tuple[list[int], int]], max_seq_length: int) -> list[float]:
    """Mean loss over each row's answer tokens, one forward pass for the batch.

    Only the answer positions are projected onto the vocabulary (as ``train.loss=answer_only`` does): the
    prompt and padding positions' projection and softmax over 49,152 columns were thrown away (a study's
    verdict, 164 questions on 2 cores: 202 s -> 154 s per adapter)."""
    tokens = [ids[:max_seq_length] for ids, _ in rows]
    width = max(len(t) for t in tokens)
    batch = mx.array([t + [0] * (width - len(t)) for t in tokens])
    steps = np.arange(1, width)[None, :]  # position j predicts token j + 1
    mask = (steps >= np.array([[offset] for _, offset in rows])) & (steps <= np.array([[len(t) - 1] for t in tokens]))
    flat = np.flatnonzero(mask)
    picked = mx.array(flat)
    counts = mask.sum(axis=1)
    if flat.size == 0:
        return [float("nan")] * len(rows)
    if supports_answer_only(model):
        hidden = model.model(batch[:, :-1])
        logits = project(model, hidden.reshape(-1, hidden.shape[-1])[picked])
    else:
        logits = model(batch[:, :-1])
        logits = logits.reshape(-1, logits.shape[-1])[picked]
    ce = nn.losses.cross_entropy(logits.astype(mx.float32), batch[:, 1:].reshape(-1)[picked])
    sums = np.bincount(flat // (width - 1), weights=np.array(ce), minlength=len(rows))
    return [float(v / n) if n > 0 else float("nan") for v, n in zip(sums, counts)]


def paired_bootstrap(a: np.ndarray, b: np.ndarray, samples: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of ``a - b`` over the questions both have, and its 95% bootstrap interval (resampling questions)."""
    diff = (np.asarray(a, float) - np.asarray(b, float))
    diff = diff[np.isfinite(diff)]
    if diff.size == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, diff.size, size=(samples, diff.size))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(diff.mean()), float(lo), float(hi)
