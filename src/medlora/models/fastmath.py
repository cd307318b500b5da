"""A faster ``exp`` for MLX's CPU backend, and the SwiGLU built on it.

Profiling a LoRA step of SmolLM2-135M on a 2-core CPU (bench/train_throughput.py) shows that
most of the time is not matrix multiplication but transcendental functions: MLX's CPU ``exp``
costs ~20 ns per element (``add``: ~2 ns), and a step evaluates ~100 million of them, in the
attention softmax, in SiLU's sigmoid and in the vocabulary-wide log-sum-exp of the loss.
(The attention softmax stays MLX's: a hand-written attention around a faster softmax lost
more in its batched small matmuls than it won, measured at 2x slower per step.)

:func:`fast_exp` computes ``2**n * 2**f`` with a degree-7 polynomial for ``2**f`` and the exponent
written straight into the float's bits: ~8.7 ns per element on cache-sized arrays (measured on 1M
elements), relative error < 1e-6 (float32's own ``exp`` is ~1e-7). Its gradient reuses its output,
as ``exp``'s does. In SwiGLU it took a training step from 3.27 to 3.03 s (batch 4 x 160).

:func:`fast_kernels` swaps the SwiGLU function of a loaded mlx-lm model's module for one using it,
for the duration of a ``with`` block (training, validation); generation and everything else keep
mlx-lm's own.

Not used in the loss: on a (positions x 49,152) logits matrix ``mx.compile`` does not fuse the
polynomial's steps on the CPU, and their full-size intermediates multiplied the evaluation's
memory peak by ~5 (measured 1.25 GB more for 1,272 positions), which the study's memory cap
cannot afford; in SwiGLU (4 x 160 x 1,536 per layer) they are a few MB. ``tests/test_loss.py``
checks loss and gradients against mlx-lm's ``default_loss`` with the stock kernels.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

import mlx.core as mx

LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453
# Taylor coefficients of e**y, y = f * ln 2 in [0, ln 2): truncation error < 2e-7
_COEFFS = (1 / 5040, 1 / 720, 1 / 120, 1 / 24, 1 / 6, 1 / 2, 1.0, 1.0)


@mx.custom_function
def fast_exp(x: mx.array) -> mx.array:
    """``exp(x)`` in float32 (inputs below -87 give ~0, above 88 are clamped)."""
    t = mx.clip(x.astype(mx.float32), -87.0, 88.0) * LOG2E
    n = mx.floor(t)
    y = (t - n) * LN2
    p = _COEFFS[0]
    for c in _COEFFS[1:]:
        p = p * y + c
    scale = ((n.astype(mx.int32) + 127) << 23).view(mx.float32)
    return (p * scale).astype(x.dtype)


@fast_exp.vjp
def _fast_exp_vjp(primals, cotangent, output):
    return cotangent * output


def swiglu(gate: mx.array, x: mx.array) -> mx.array:
    """``silu(gate) * x`` with ``sigmoid(g) = 1 / (1 + exp(-g))`` on :func:`fast_exp`."""
    return gate / (1 + fast_exp(-gate)) * x


@contextlib.contextmanager
def fast_kernels(model, enabled: bool = True) -> Iterator[bool]:
    """Within the block, ``model``'s mlx-lm module uses :func:`swiglu` (yields whether it has one)."""
    module = sys.modules.get(type(model).__module__)
    original = getattr(module, "swiglu", None) if enabled else None
    if original is None:
        yield False
        return
    module.swiglu = swiglu
    try:
        yield True
    finally:
        module.swiglu = original
