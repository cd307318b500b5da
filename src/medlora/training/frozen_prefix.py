"""Validation without recomputing the frozen layers: their output is cached per validation batch.

LoRA adapts the *last* ``lora.num_layers`` transformer blocks; the blocks below them are frozen, so
for a given validation batch their output is the same at every evaluation of a run, and of every
trial of a study (the same base model, the same fixed validation subset, the same batching). A study
validates each trial every 32 examples on the same 32 questions: without this cache most of that
work recomputes numbers it already has.

:class:`PrefixCache` (one per process, :data:`CACHE`) keeps, per (base model, batch, number of
frozen blocks), the hidden states after those blocks. A batch not seen at that depth starts from the
deepest cached depth below it (or the embeddings), runs the remaining frozen blocks, and is cached;
the evaluation then runs only the adapted blocks, the final norm and the loss. Values equal the
uncached forward pass (``tests/training/test_frozen_prefix.py``).

Only for mlx-lm's ``llama`` models whose blocks all use full attention (SmolLM2 and TinyLlama-style
models: their forward pass is exactly embed -> blocks with a causal mask -> norm, which
``tests/training/test_frozen_prefix.py`` checks against mlx-lm's own); other models validate the usual way.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten

MAX_BYTES = 128 * 2**20  # cached hidden states kept per process (least recently used dropped first)


def supported(model) -> bool:
    """True for an mlx-lm llama model with full attention in every block."""
    body = getattr(model, "model", None)
    return (getattr(model, "model_type", None) == "llama" and body is not None
            and all(t == "full_attention" for t in getattr(body, "layer_types", ["?"])))


def frozen_blocks(model) -> int:
    """How many leading transformer blocks have no trainable parameter (LoRA adapts the last ones)."""
    for i, block in enumerate(model.model.layers):
        if tree_flatten(block.trainable_parameters()):
            return i
    return len(model.model.layers)


def fingerprint(model) -> str:
    """Which base model (cheap: the shapes and a slice of the first block's MLP weights)."""
    first = model.model.layers[0].mlp.down_proj
    weight = getattr(first, "weight", None)
    probe = np.array(weight[0, :16]) if weight is not None else np.zeros(1)
    shapes = (len(model.model.layers), *model.model.embed_tokens.weight.shape)
    return hashlib.sha1(repr(shapes).encode() + probe.tobytes()).hexdigest()[:16]


def causal_mask(hidden: mx.array):
    from mlx_lm.models.base import create_attention_mask

    return create_attention_mask(hidden, None)


def run_blocks(model, hidden: mx.array, start: int, stop: int) -> mx.array:
    """Blocks ``start:stop`` of the model's body applied to ``hidden`` (no KV cache, causal mask)."""
    mask = causal_mask(hidden)
    for block in model.model.layers[start:stop]:
        hidden = block(hidden, mask, cache=None)
    return hidden


class PrefixCache:
    """Hidden states after the first ``depth`` blocks, per (model fingerprint, batch tokens, depth)."""

    def __init__(self, max_bytes: int = MAX_BYTES):
        self.max_bytes, self.bytes = max_bytes, 0
        self.entries: OrderedDict[tuple, mx.array] = OrderedDict()
        self.hits = self.misses = 0

    def hidden(self, model, inputs: mx.array, depth: int) -> mx.array:
        """The hidden states of ``inputs`` after ``depth`` blocks, from the cache where it can."""
        key = (fingerprint(model), hashlib.sha1(np.array(inputs).tobytes() + repr(inputs.shape).encode()).hexdigest())
        if (*key, depth) in self.entries:
            self.hits += 1
            self.entries.move_to_end((*key, depth))
            return self.entries[(*key, depth)]
        self.misses += 1
        start = max((d for (f, b, d) in self.entries if (f, b) == key and d <= depth), default=None)
        hidden = model.model.embed_tokens(inputs) if start is None else self.entries[(*key, start)]
        hidden = run_blocks(model, hidden, start or 0, depth)
        mx.eval(hidden)
        self._keep((*key, depth), hidden)
        return hidden

    def _keep(self, key: tuple, hidden: mx.array) -> None:
        self.entries[key] = hidden
        self.bytes += hidden.nbytes
        while self.bytes > self.max_bytes and len(self.entries) > 1:
            _, dropped = self.entries.popitem(last=False)
            self.bytes -= dropped.nbytes

    def clear(self) -> None:
        self.entries.clear()
        self.bytes = self.hits = self.misses = 0


CACHE = PrefixCache()
