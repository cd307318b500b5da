"""The optimised loss computes exactly mlx-lm's ``default_loss``: same value, same gradient."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten
from mlx_lm.tuner.trainer import default_loss

from medlora.models import load as models
from medlora.config import load_run_config
from medlora.models.fastmath import fast_kernels
from medlora.training.loss import AnswerOnlyLoss, answer_positions, supports_answer_only, with_answer_positions
from medlora.training.run import add_lora


def _model(model_cache, name="tiny_random"):
    cfg = load_run_config([f"model={name}", "lora.num_layers=-1", f"paths.models={model_cache}"])
    mx.random.seed(3)
    model, _ = models.load_model(cfg.model, cfg.paths.models)
    add_lora(model, cfg)
    # LoRA B starts at zero: make the adapters non-trivial so their gradients are all exercised.
    model.update(nn.utils.tree_map(lambda p: p + 0.01 * mx.random.normal(p.shape), model.trainable_parameters()))
    return model


def _batch(vocab: int, rows: int = 5, width: int = 33, seed: int = 0):
    """Rows of different lengths with padding, each with a prompt of a different length."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, vocab, size=(rows, width)).astype(np.int32)
    lengths = np.array([[1 + 3 * r, width - 4 * r] for r in range(rows)], np.int32)
    for r, (_, n) in enumerate(lengths):
        tokens[r, n:] = 0
    return mx.array(tokens), mx.array(lengths)


def _compare(model, batch, lengths, streams, fast_math):
    fast = AnswerOnlyLoss(streams=streams)
    extended = next(with_answer_positions(iter([(batch, lengths)]), streams))
    ref_vg = nn.value_and_grad(model, default_loss)
    fast_vg = nn.value_and_grad(model, fast)
    (ref, ref_n), ref_grad = ref_vg(model, batch, lengths)
    with fast_kernels(model, fast_math) as swapped:
        assert swapped == fast_math
        (got, got_n), got_grad = fast_vg(model, *extended)
    assert got_n.item() == ref_n.item()
    assert got.item() == pytest.approx(ref.item(), rel=1e-5)
    ref_flat, got_flat = dict(tree_flatten(ref_grad)), dict(tree_flatten(got_grad))
    assert ref_flat.keys() == got_flat.keys() and ref_flat
    for key, ref_g in ref_flat.items():
        scale = float(mx.abs(ref_g).max())
        assert scale > 0, key  # a gradient that is all zero would prove nothing
        # float32 sums in another order: agreement to ~1e-4 of the gradient's own scale
        np.testing.assert_allclose(np.array(got_flat[key]), np.array(ref_g), rtol=1e-3, atol=1e-4 * scale, err_msg=key)
    # evaluation (compiled forward) gives the same value too
    model.eval()
    with fast_kernels(model, fast_math):
        value, count = fast(model, *extended)
    model.train()
    assert value.item() == pytest.approx(ref.item(), rel=1e-5) and count.item() == ref_n.item()


@pytest.mark.parametrize("streams", [1, 2])
@pytest.mark.parametrize("fast_math", [False, True])
def test_loss_and_gradient_equal_default_loss(model_cache, streams, fast_math):
    model = _model(model_cache)
    assert supports_answer_only(model)
    batch, lengths = _batch(model.args.vocab_size)
    _compare(model, batch, lengths, streams, fast_math)


@pytest.mark.slow
def test_equal_on_the_embedded_model(model_cache):
    model = _model(model_cache, "smollm2_135m")
    batch, lengths = _batch(model.args.vocab_size, rows=2, width=49, seed=1)
    _compare(model, batch, lengths, streams=2, fast_math=True)


def test_positions_are_the_default_loss_mask():
    lengths = np.array([[3, 10], [1, 5], [6, 6], [2, 12], [4, 9]])
    index, weight = answer_positions(lengths, n_positions=12, streams=2)
    assert index.shape == weight.shape == (2, 64)
    steps = np.arange(1, 13)
    for s in range(2):
        part = lengths[[slice(0, 2), slice(2, 5)][s]]
        mask = ((steps >= part[:, :1]) & (steps <= part[:, 1:])).reshape(-1)
        chosen = index[s][weight[s] > 0]
        assert sorted(chosen.tolist()) == np.flatnonzero(mask).tolist()
