"""generation.adapter_strength: an answering adapter's updates scaled, on the straight line between the
untuned weights (0) and the trained adapter (1)."""

from __future__ import annotations

import json

import mlx.core as mx
import pytest
from mlx.utils import tree_map
from mlx_lm.tuner.lora import LoRALinear

from medlora.config import load_run_config
from medlora.errors import UserError
from medlora.models.generation import chat_prompt, load_with_adapter
from medlora.models.load import load_model
from medlora.training.callbacks import save_adapter
from medlora.training.lora import adapter_config, add_lora


@pytest.fixture
def trained_adapter(tiny_overrides, tmp_path):
    """An adapter whose updates are not zero (a fresh LoRA layer's B is zero: no update at all)."""
    cfg = load_run_config(tiny_overrides)
    model, _ = load_model(cfg.model, cfg.paths.models)
    config = adapter_config(cfg, add_lora(model, cfg))
    mx.random.seed(0)
    model.update(tree_map(lambda p: 0.05 * mx.random.normal(p.shape), model.trainable_parameters()))
    save_adapter(model, tmp_path / "adapter", config)
    return tmp_path / "adapter"


def at(overrides, strength, folder):
    return load_with_adapter(load_run_config([*overrides, f"generation.adapter_strength={strength}"]), folder)


def next_token_logits(model, tokenizer):
    return model(mx.array([chat_prompt(tokenizer, "What is glaucoma?")]))[0, -1]


def fused(model) -> dict[str, mx.array]:
    """Each LoRA layer's effective weight W + scale * B A, by mlx-lm's own fuse."""
    return {name: m.fuse().weight for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def test_strength_zero_answers_as_the_untuned_model_and_one_as_the_adapter(tiny_overrides, trained_adapter):
    cfg = load_run_config(tiny_overrides)
    base, tokenizer = load_model(cfg.model, cfg.paths.models)
    untuned = next_token_logits(base, tokenizer)
    assert mx.allclose(next_token_logits(at(tiny_overrides, 0, trained_adapter)[0], tokenizer), untuned,
                       atol=1e-3)
    full = next_token_logits(at(tiny_overrides, 1, trained_adapter)[0], tokenizer)
    assert mx.abs(full - untuned).max().item() > 1e-2  # the adapter changes the answer's odds


def test_the_weights_lie_on_the_line_between_untuned_and_trained(tiny_overrides, trained_adapter):
    one, zero = fused(at(tiny_overrides, 1, trained_adapter)[0]), fused(at(tiny_overrides, 0, trained_adapter)[0])
    weighed = fused(at(tiny_overrides, 0.7, trained_adapter)[0])
    assert weighed.keys() == one.keys() and len(one) > 0
    for name in one:
        assert mx.allclose(weighed[name], zero[name] + 0.7 * (one[name] - zero[name]), atol=1e-5), name


def test_a_dora_adapter_is_refused_unless_used_as_trained(tiny_overrides, trained_adapter):
    config = json.loads((trained_adapter / "adapter_config.json").read_text())
    (trained_adapter / "adapter_config.json").write_text(json.dumps({**config, "fine_tune_type": "dora"}))
    with pytest.raises(UserError, match="adapter_strength=1"):
        at(tiny_overrides, 0.7, trained_adapter)
    at(tiny_overrides, 1, trained_adapter)  # as trained: fine
