"""The training/validation loss: mlx-lm's ``default_loss``, computed with less work.

``default_loss`` projects every position of the batch onto the vocabulary (49,152 columns
for SmolLM2) and takes a log-softmax there, then multiplies the prompt and padding positions
by zero. On a CPU that projection and softmax are ~20% of a training step, and with the
prompt masked a third of them are thrown away. ``AnswerOnlyLoss``:

1. runs the transformer body once over the whole batch (attention needs every position),
2. gathers the hidden states of the positions inside the loss mask (answer tokens),
3. projects and scores only those.

The gathered positions are computed on the host by :func:`with_answer_positions` from the
``lengths`` mlx-lm's batcher yields, and padded to a multiple of ``POSITION_BUCKET`` (weight 0)
so that compiled steps see few distinct shapes.

It can also split the batch into ``streams`` row ranges evaluated on separate MLX CPU streams:
MLX's CPU element-wise kernels (softmax, SiLU, norms) are single-threaded, so on a 2-core
machine one core idles through them; two streams keep both busy. The parts' summed losses
are divided by the batch's total answer-token count, so value and gradient are those of the
whole batch (tests/test_loss.py checks both against ``default_loss``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from functools import partial

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx_lm.tuner.trainer import default_loss

from medlora.models import blas
from medlora.training import frozen_prefix

POSITION_BUCKET = 64
# Architectures whose mlx-lm ``Model.__call__`` is exactly ``model.model(inputs)`` followed by
# the tied embedding or ``lm_head`` (checked against mlx-lm's sources); others use default_loss.
SPLITTABLE = {"llama", "gemma", "qwen2", "qwen3", "phi3"}


def supports_answer_only(model) -> bool:
    return getattr(model, "model_type", None) in SPLITTABLE and hasattr(model, "model")


def project(model, hidden: mx.array) -> mx.array:
    """The model's output head (tied embedding or ``lm_head``) applied to hidden states."""
    if hasattr(model, "lm_head"):
        return model.lm_head(hidden)
    return model.model.embed_tokens.as_linear(hidden)


def parts(rows: int, streams: int) -> list[slice]:
    """The batch rows each stream computes: ``min(streams, rows)`` contiguous, near-equal parts."""
    n = min(streams, rows)
    bounds = [rows * i // n for i in range(n + 1)]
    return [slice(a, b) for a, b in zip(bounds, bounds[1:])]


def answer_positions(lengths: np.ndarray, n_positions: int, streams: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices (per batch part) of the positions inside ``default_loss``'s mask, and 0/1 weights.

    ``lengths`` is mlx-lm's ``(offset, length)`` per row; position ``j`` (0-based, predicting token
    ``j + 1``) is in the loss iff ``offset <= j + 1 <= length``. Returns ``(parts, K)`` arrays,
    indices relative to each part's flattened ``(rows_in_part * n_positions)`` positions.
    """
    steps = np.arange(1, n_positions + 1)
    chosen = []
    for part in parts(len(lengths), streams):
        rows = lengths[part]
        mask = (steps[None, :] >= rows[:, 0:1]) & (steps[None, :] <= rows[:, 1:2])
        chosen.append(np.flatnonzero(mask))
    width = max(1, max(len(c) for c in chosen))
    width = -(-width // POSITION_BUCKET) * POSITION_BUCKET
    index = np.zeros((len(chosen), width), np.int32)
    weight = np.zeros((len(chosen), width), np.float32)
    for s, c in enumerate(chosen):
        index[s, : len(c)] = c
        weight[s, : len(c)] = 1.0
    return index, weight


def with_answer_positions(batches: Iterator, streams: int) -> Iterator:
    """mlx-lm's ``(batch, lengths)`` pairs, extended with ``(index, weight)`` for :class:`AnswerOnlyLoss`."""
    for batch, lengths in batches:
        index, weight = answer_positions(np.array(lengths), batch.shape[1] - 1, streams)
        yield batch, lengths, mx.array(index), mx.array(weight)


class AnswerOnlyLoss:
    """``loss(model, batch, lengths, index, weight) -> (mean answer-token loss, answer-token count)``.

    Same contract as mlx-lm's ``default_loss`` (plus the two position arrays), so mlx-lm's trainer
    and ``evaluate`` use it unchanged. The batch is computed in as many parts as ``index`` has rows,
    each on its own CPU stream. In evaluation mode (``model.training`` false) the forward pass is
    compiled and evaluated at once, with OpenBLAS threads divided among the parts.
    """

    def __init__(self, streams: int = 1, cache_prefix: bool = False):
        self._cpu_streams = [mx.new_stream(mx.cpu) for _ in range(streams)] if streams > 1 else []
        self._compiled_eval: Callable | None = None
        self._cache_prefix, self._depth = cache_prefix, 0

    def __call__(self, model, batch, lengths, index, weight):
        if model.training:
            return self._loss(model, batch, lengths, index, weight)
        if self._compiled_eval is None:
            depth = frozen_prefix.frozen_blocks(model) if self._cache_prefix and frozen_prefix.supported(model) else 0
            self._depth = depth if depth < len(model.model.layers) else 0  # the untrained model: nothing to reuse
            self._compiled_eval = mx.compile(lambda *a: self._loss(model, *a, start=self._depth), inputs=model.state)
        with blas.threads((os.cpu_count() or 1) // index.shape[0]):
            if self._depth:  # the frozen blocks' output for this batch: computed once per process (cached)
                batch = frozen_prefix.CACHE.hidden(model, batch[:, :-1], self._depth), batch[:, 1:]
            out = self._compiled_eval(batch, lengths, index, weight)
            mx.eval(out)
        return out

    def _loss(self, model, batch, lengths, index, weight, start: int = 0):
        """``batch``: token ids, or (start > 0) the pair (hidden states after ``start`` blocks, targets)."""
        inputs, targets = (batch[:, :-1], batch[:, 1:]) if start == 0 else batch
        totals = []
        for s, part in enumerate(parts(targets.shape[0], index.shape[0])):
            if index.shape[0] > 1:
                with mx.stream(self._cpu_streams[s]):
                    totals.append(self._part_sum(model, inputs[part], targets[part], index[s], weight[s], start))
            else:
                totals.append(self._part_sum(model, inputs[part], targets[part], index[s], weight[s], start))
        ntoks = weight.sum()
        loss = sum(totals) / ntoks
        return loss, ntoks.astype(mx.int32)

    def _part_sum(self, model, inputs, targets, index, weight, start: int = 0):
        if start == 0:
            hidden = model.model(inputs)
        else:  # ``inputs`` are the hidden states after the frozen blocks
            hidden = model.model.norm(frozen_prefix.run_blocks(model, inputs, start, len(model.model.layers)))
        hidden = hidden.reshape(-1, hidden.shape[-1])[index]
        logits = project(model, hidden)
        ce = nn.losses.cross_entropy(logits, targets.reshape(-1)[index]) * weight
        return ce.astype(mx.float32).sum()


Extend = Callable[[Iterator], Iterator]


def training_loss(train_cfg, model, cache_prefix: bool = False) -> tuple[Callable, Extend, Extend]:
    """``(loss, extend_train, extend_eval)``: the loss for mlx-lm's trainer, and what turns mlx-lm's training
    and validation batches into its arguments. ``cache_prefix``: validation reuses the frozen blocks' output
    (:mod:`medlora.training.frozen_prefix`; for runs that validate the same batches again and again)."""
    if train_cfg.loss == "answer_only" and supports_answer_only(model):
        streams, eval_streams = train_cfg.cpu_streams, train_cfg.eval_cpu_streams
        return (AnswerOnlyLoss(max(streams, eval_streams), cache_prefix),
                partial(with_answer_positions, streams=streams), partial(with_answer_positions, streams=eval_streams))
    if train_cfg.loss == "answer_only":
        print(f"medlora: note: train.loss=answer_only does not know model type "
              f"{getattr(model, 'model_type', '?')!r}; using mlx-lm's default_loss", file=sys.stderr)
    return default_loss, _unchanged, _unchanged


def _unchanged(batches: Iterator) -> Iterator:
    return batches
