"""The held-out questions that answers and losses are measured on, the same sample wherever they are used.

``evaluate`` and the study's verdict (:mod:`medlora.study.verdict`) both call :func:`test_sample`, so
their test losses are over the same questions.
"""

from __future__ import annotations

import random

from medlora.config import RunConfig
from medlora.data import consumer, splits
from medlora.errors import UserError


def test_sample(cfg: RunConfig) -> list[dict]:
    """``evaluate.questions`` records of the ``evaluate.questions_set``, a seeded sample (all of it if smaller):
    the test split's own records, or the consumer set's test half (same record format, the consumer
    message as the question)."""
    if cfg.evaluate.questions_set == "consumer":
        records = consumer.consumer_records(cfg, "test")
    else:
        split_dir = splits.prepare_from_config(cfg.data, cfg.paths.processed)
        records = splits.load_split(split_dir, "test")
    if not records:
        raise UserError(f"the test split of {cfg.data.csv} is empty (fix: data.test_fraction above 0)")
    return random.Random(cfg.evaluate.seed).sample(records, min(cfg.evaluate.questions, len(records)))
