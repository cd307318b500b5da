"""A tiny randomly initialised llama with the embedded model's real tokenizer, for fast tests.

Its sizes and seed come from ``model.tiny`` (``conf/model/tiny_random.yaml``); one PRNG key per
parameter name makes the weights deterministic. It learns, but its answers are gibberish.
"""

from __future__ import annotations

import json
from pathlib import Path

from medlora.config import TinyModelArgs
from medlora.errors import UserError
from medlora.models import gguf, gguf_tokenizer

TINY_VERSION = "1"  # bump when the tiny model's construction changes


def tiny_config(args: TinyModelArgs, vocab_size: int) -> dict:
    if args.hidden_size % args.num_attention_heads or args.num_attention_heads % args.num_key_value_heads:
        raise UserError(
            f"model.tiny: hidden_size={args.hidden_size} must divide by num_attention_heads={args.num_attention_heads}, "
            f"which must divide by num_key_value_heads={args.num_key_value_heads} (fix: e.g. 64, 4, 2)"
        )
    if (args.hidden_size // args.num_attention_heads) % 2:
        raise UserError(f"model.tiny: the head size hidden_size/num_attention_heads must be even for RoPE "
                        f"(fix: e.g. model.tiny.hidden_size={args.num_attention_heads * 16})")
    return {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": args.hidden_size,
        "num_hidden_layers": args.num_layers,
        "intermediate_size": args.intermediate_size,
        "num_attention_heads": args.num_attention_heads,
        "num_key_value_heads": args.num_key_value_heads,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "max_position_embeddings": 2048,
        "vocab_size": vocab_size,
        "tie_word_embeddings": True,
    }


def tiny_weights(args: TinyModelArgs, vocab_size: int, dtype: str):
    """Deterministic random weights for a tiny mlx-lm llama (one PRNG key per parameter name)."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.models import llama

    config = tiny_config(args, vocab_size)
    model = llama.Model(llama.ModelArgs.from_dict(config))
    dt = getattr(mx, dtype)
    params = sorted(tree_flatten(model.parameters()), key=lambda kv: kv[0])
    keys = mx.random.split(mx.random.key(args.seed), len(params))
    weights = {}
    for key, (name, p) in zip(keys, params):
        if "norm" in name:
            weights[name] = mx.ones(p.shape, dtype=dt)
        else:
            weights[name] = (0.02 * mx.random.normal(p.shape, key=key)).astype(dt)
    return weights, config


def build_tiny(args: TinyModelArgs, tokenizer_gguf: Path, dtype: str, out: Path) -> None:
    """Write the tiny model's mlx-lm folder into ``out``: random weights, the GGUF's tokenizer and special ids."""
    import mlx.core as mx

    _, md = gguf.read_gguf(tokenizer_gguf)
    gguf_tokenizer.write_tokenizer(md, out)
    weights, config = tiny_weights(args, len(md["tokenizer.ggml.tokens"]), dtype)
    mx.save_safetensors(str(out / "model.safetensors"), weights, metadata={"format": "mlx"})
    real = gguf.model_config(md)  # special-token ids only
    config.update({k: real[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if k in real})
    config["torch_dtype"] = dtype
    (out / "config.json").write_text(json.dumps(config, indent=2))
    gguf.write_generation_config(config, out)
