"""A LoRA model made standalone: fused weights, saved as an mlx-lm folder or a llama GGUF, and logits to compare.

* :func:`fuse_lora`: mlx-lm's own ``fuse()`` of each LoRA layer (W + scale * B^T A^T), as ``mlx_lm fuse``.
* :func:`save_folder`: ``mlx_lm.utils.save`` (weights, config, tokenizer), loadable by ``mlx_lm.load``.
* :func:`write_gguf`: GGUF for llama.cpp, LM Studio, Ollama. The tensors are named and their q/k rows
  permuted by mlx-lm's GGUF converter (``mlx_lm.gguf``); the tokenizer metadata is copied from the
  GGUF the base model came from. mlx-lm's ``convert_to_gguf`` itself is not used: it labels every
  vocabulary SentencePiece (``tokenizer.ggml.model = llama``), wrong for SmolLM2's byte-level BPE.
* :func:`next_token_logits`: what the round-trip checks compare.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlx.core as mx
from mlx.utils import tree_flatten, tree_unflatten

from medlora.errors import UserError
from medlora.models.generation import chat_prompt

GGUF_FILE_TYPES = {"float32": 0, "float16": 1}  # llama.cpp's general.file_type: ALL_F32, MOSTLY_F16
_KEEP_GENERAL = ("general.license", "general.languages", "general.basename", "general.size_label")


def fuse_lora(model) -> int:
    """Replace every LoRA layer of ``model`` by a plain linear layer holding W + its low-rank update."""
    fused = [(name, module.fuse()) for name, module in model.named_modules() if hasattr(module, "fuse")]
    if fused:
        model.update_modules(tree_unflatten(fused))
    return len(fused)


def save_folder(model, tokenizer, base_dir: Path, dst: Path) -> None:
    """An mlx-lm model folder of ``model`` (config and extra files from the base model's ``base_dir``)."""
    from mlx_lm.utils import load_config, save

    save(dst, base_dir, model, tokenizer, load_config(Path(base_dir)), donate_model=False)


def llama_metadata(config: dict[str, Any]) -> dict[str, Any]:
    """GGUF ``llama.*`` keys for an mlx-lm llama ``config.json`` (what llama.cpp and medlora.models.gguf read)."""
    u32 = lambda key: mx.array(int(config[key]), dtype=mx.uint32)  # noqa: E731
    heads = int(config["num_attention_heads"])
    head_dim = int(config.get("head_dim") or config["hidden_size"] // heads)
    md = {
        "llama.context_length": u32("max_position_embeddings"), "llama.embedding_length": u32("hidden_size"),
        "llama.block_count": u32("num_hidden_layers"), "llama.feed_forward_length": u32("intermediate_size"),
        "llama.attention.head_count": u32("num_attention_heads"),
        "llama.attention.head_count_kv": mx.array(int(config.get("num_key_value_heads", heads)), dtype=mx.uint32),
        "llama.rope.dimension_count": mx.array(head_dim, dtype=mx.uint32),
        "llama.attention.layer_norm_rms_epsilon": mx.array(float(config["rms_norm_eps"]), dtype=mx.float32),
        "llama.rope.freq_base": mx.array(float(config.get("rope_theta", 10000.0)), dtype=mx.float32),
        "llama.vocab_size": u32("vocab_size"),
    }
    if head_dim * heads != int(config["hidden_size"]):
        md["llama.attention.key_length"] = md["llama.attention.value_length"] = mx.array(head_dim, dtype=mx.uint32)
    scaling = config.get("rope_scaling") or {}
    if scaling.get("type") == "linear":
        md["llama.rope.scaling.type"] = "linear"
        md["llama.rope.scaling.factor"] = mx.array(float(scaling["factor"]), dtype=mx.float32)
    elif scaling:
        raise UserError(f"rope scaling {scaling} has no GGUF export here (fix: export.gguf=none)")
    return md


def gguf_tensors(model, config: dict[str, Any], dtype: str) -> dict[str, mx.array]:
    """The model's weights under llama.cpp's names, q/k rows permuted as llama.cpp expects."""
    from mlx_lm.gguf import permute_weights, translate_weight_names

    heads, kv_heads = config["num_attention_heads"], config.get("num_key_value_heads", config["num_attention_heads"])
    out = {}
    for name, weight in tree_flatten(model.parameters()):
        if "self_attn.q_proj.weight" in name:
            weight = permute_weights(weight, heads, heads)
        elif "self_attn.k_proj.weight" in name:
            weight = permute_weights(weight, heads, kv_heads)
        keep_f32 = "norm" in name or dtype == "float32"  # llama.cpp wants norms in float32
        out[translate_weight_names(name)] = weight.astype(mx.float32 if keep_f32 else mx.float16)
    return out


def write_gguf(model, config: dict[str, Any], source_gguf: Path, dst: Path, dtype: str, name: str) -> None:
    """A GGUF file of llama ``model``, with the tokenizer of ``source_gguf`` (the base model's GGUF)."""
    if config.get("model_type") != "llama":
        raise UserError(f"GGUF export supports llama-architecture models, not {config.get('model_type')!r} "
                        "(fix: export.gguf=none)")
    _, source = mx.load(str(source_gguf), return_metadata=True)
    metadata = {k: v for k, v in source.items() if k.startswith("tokenizer.") or k in _KEEP_GENERAL}
    metadata.update(llama_metadata(config))
    metadata.update({"general.architecture": "llama", "general.name": name,
                     "general.file_type": mx.array(GGUF_FILE_TYPES[dtype], dtype=mx.uint32)})
    mx.save_gguf(str(dst), gguf_tensors(model, config, dtype), metadata)


def next_token_logits(model, tokenizer, questions: list[str], system_prompt: str | None = None) -> list[mx.array]:
    """The float32 logits of the first answer token for each chat-formatted question."""
    out = []
    for question in questions:
        ids = mx.array([chat_prompt(tokenizer, question, system_prompt)])
        logits = model(ids)[0, -1].astype(mx.float32)
        mx.eval(logits)
        out.append(logits)
    return out


def max_abs_difference(a: list[mx.array], b: list[mx.array]) -> float:
    return max(float(mx.max(mx.abs(x - y))) for x, y in zip(a, b))


def rounded_to(model, dtype: str) -> None:
    """Round ``model``'s weights to ``dtype`` and back, in place, as a GGUF of that dtype stores them."""
    if dtype == "float32":
        return
    model.update(tree_unflatten([(k, v if "norm" in k else v.astype(mx.float16).astype(v.dtype))
                                 for k, v in tree_flatten(model.parameters())]))


def read_config(folder: Path) -> dict[str, Any]:
    return json.loads((Path(folder) / "config.json").read_text())
