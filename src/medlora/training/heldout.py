"""Per-question losses on held-out records, for comparisons that come with their uncertainty.

mlx-lm's ``evaluate`` returns one number for a whole set. To say whether one adapter is better
than another by more than the noise, each question's own loss is needed (its mean answer-token
cross-entropy, truncated like training, with the training loss function), so that the difference
can be bootstrapped over questions (:func:`paired_bootstrap`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from mlx_lm.tuner.trainer import evaluate as mlx_evaluate

from medlora.config import RunConfig
from medlora.data.tokenize import encode_chats
from medlora.models.fastmath import fast_kernels
from medlora.training.batches import batch_iterator
from medlora.training.loss import training_loss


def per_question_losses(cfg: RunConfig, model, tokenizer, records: Sequence[dict]) -> np.ndarray:
    """Each record's mean answer-token loss (a record with no answer token left after truncation: NaN)."""
    dataset = encode_chats(list(records), tokenizer, mask_prompt=cfg.train.mask_prompt,
                           max_seq_length=cfg.train.max_seq_length, truncation=cfg.train.truncation)
    loss, _, extend = training_loss(cfg.train, model)
    model.eval()
    out = []
    with fast_kernels(model, cfg.train.fast_math):
        for example in dataset:
            out.append(float(mlx_evaluate(model, [example], batch_size=1, num_batches=-1,
                                          max_seq_length=cfg.train.max_seq_length, loss=loss,
                                          iterate_batches=batch_iterator(0, 1, extend_eval=extend))))
    return np.array(out)


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
