"""Validation from the cached output of the frozen blocks gives the same loss as the full forward pass."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx_lm.tuner.trainer import default_loss

from medlora.config import load_run_config
from medlora.models import load as models
from medlora.training import frozen_prefix
from medlora.training.loss import AnswerOnlyLoss, with_answer_positions
from medlora.training.run import add_lora


def _model(model_cache, lora_layers: int):
    cfg = load_run_config(["model=tiny_random", f"lora.num_layers={lora_layers}", f"paths.models={model_cache}"])
    mx.random.seed(5)
    model, _ = models.load_model(cfg.model, cfg.paths.models)
    add_lora(model, cfg)
    model.update(nn.utils.tree_map(lambda p: p + 0.05 * mx.random.normal(p.shape), model.trainable_parameters()))
    model.eval()
    return model


def _batches(vocab: int, n: int = 3, rows: int = 4, width: int = 29):
    rng = np.random.default_rng(1)
    out = []
    for _ in range(n):
        tokens = rng.integers(1, vocab, size=(rows, width)).astype(np.int32)
        lengths = np.array([[2 + r, width - 3 * r] for r in range(rows)], np.int32)
        for r, (_, end) in enumerate(lengths):
            tokens[r, end:] = 0
        out.append((mx.array(tokens), mx.array(lengths)))
    return out


def _losses(model, batches, cache: bool, streams: int = 2) -> list[float]:
    loss = AnswerOnlyLoss(streams, cache_prefix=cache)
    return [loss(model, *extended)[0].item() for extended in with_answer_positions(iter(batches), streams)]


def test_cached_frozen_blocks_give_the_loss_of_the_full_forward_pass(model_cache):
    frozen_prefix.CACHE.clear()
    model = _model(model_cache, lora_layers=1)
    assert frozen_prefix.supported(model) and frozen_prefix.frozen_blocks(model) == len(model.model.layers) - 1
    batches = _batches(model.model.embed_tokens.weight.shape[0])
    reference = [default_loss(model, b, lengths)[0].item() for b, lengths in batches]
    first = _losses(model, batches, cache=True)
    hits = frozen_prefix.CACHE.hits
    again = _losses(model, batches, cache=True)
    assert frozen_prefix.CACHE.hits == hits + len(batches)  # the second evaluation reused every batch
    assert first == pytest.approx(reference, rel=1e-5) and again == pytest.approx(reference, rel=1e-5)
    assert _losses(model, batches, cache=False) == pytest.approx(reference, rel=1e-5)


def test_a_deeper_prefix_starts_from_a_shallower_cached_one_and_another_model_shares_nothing(model_cache):
    frozen_prefix.CACHE.clear()
    batches = _batches(256, n=1)
    tokens = batches[0][0][:, :-1]
    deep = _model(model_cache, lora_layers=1)
    shallow = frozen_prefix.CACHE.hidden(deep, tokens, 0)  # the embeddings
    full = frozen_prefix.CACHE.hidden(deep, tokens, frozen_prefix.frozen_blocks(deep))
    direct = frozen_prefix.run_blocks(deep, deep.model.embed_tokens(tokens), 0, frozen_prefix.frozen_blocks(deep))
    assert np.allclose(np.array(full), np.array(direct), atol=1e-5) and shallow.shape == full.shape
    assert frozen_prefix.CACHE.misses == 2 and len(frozen_prefix.CACHE.entries) == 2
    # the same body as mlx-lm's forward: embed -> blocks (causal mask) -> norm
    body = deep.model.norm(frozen_prefix.run_blocks(deep, deep.model.embed_tokens(tokens), 0, len(deep.model.layers)))
    assert np.allclose(np.array(body), np.array(deep.model(tokens)), atol=1e-5)
    other = _model(model_cache, lora_layers=1)
    other.model.layers[0].mlp.down_proj.weight = other.model.layers[0].mlp.down_proj.weight + 1.0
    frozen_prefix.CACHE.hidden(other, tokens, 1)
    assert frozen_prefix.CACHE.misses == 3  # a different base model: its own entries


def test_the_cache_keeps_within_its_byte_budget():
    cache = frozen_prefix.PrefixCache(max_bytes=3 * 4 * 8)
    for i in range(5):
        cache._keep(("m", str(i), 1), mx.zeros((8,), mx.float32))
    assert cache.bytes <= 3 * 4 * 8 and [k[1] for k in cache.entries] == ["2", "3", "4"]
