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
    """Mean loss over each row's answer tokens, one forward pass for the batch."""
    tokens = [ids[:max_seq_length] for ids, _ in rows]
    width = max(len(t) for t in tokens)
    batch = mx.array([t + [0] * (width - len(t)) for t in tokens])
    offsets = mx.array([[offset] for _, offset in rows])
    lengths = mx.array([[len(t)] for t in tokens])
    logits = model(batch[:, :-1]).astype(mx.float32)
    steps = mx.arange(1, width)[None, :]
    mask = ((steps >= offsets) & (steps <= lengths - 1)).astype(mx.float32)  # position j predicts token j + 1
    ce = nn.losses.cross_entropy(logits, batch[:, 1:]) * mask
    counts = mask.sum(axis=1)
    per_row = ce.sum(axis=1) / mx.maximum(counts, 1)
    mx.eval(per_row, counts)
    return [float(v) if n > 0 else float("nan") for v, n in zip(per_row.tolist(), counts.tolist())]


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
