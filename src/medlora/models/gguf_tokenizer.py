"""Rebuild a Hugging Face fast tokenizer from a GGUF file's ``tokenizer.ggml.*`` metadata.

Writes ``tokenizer.json`` and ``tokenizer_config.json`` (with the chat template) as
``mlx_lm.load`` expects them. Only byte-level BPE (llama.cpp's ``gpt2`` tokenizer model)
is supported; every token, special token and template is read from the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medlora.errors import UserError
from medlora.models.gguf import architecture
from medlora.models.gguf import scalar as _scalar

# llama.cpp token types (gguf.TokenType)
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _UNUSED, _BYTE = 1, 2, 3, 4, 5, 6


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

    specials = _special_tokens(md, tokens)
    add_bos = bool(_scalar(md, "tokenizer.ggml.add_bos_token", False))
    if add_bos and "bos_token" in specials:
        bos = specials["bos_token"]
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, vocab[bos])]
        )
    return tok, _tokenizer_config(md, specials, added, add_bos)


def _tokenizer_config(md: dict[str, Any], specials: dict[str, str], added: list, add_bos: bool) -> dict[str, Any]:
    """The ``tokenizer_config.json`` dict: tokenizer class, special tokens, flags, the chat template."""
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
    return config


def _special_tokens(md: dict[str, Any], tokens: list[str]) -> dict[str, str]:
    """``{"bos_token": "<|im_start|>", ...}`` for the special-token ids the metadata names."""
    names = {"bos_token": "bos", "eos_token": "eos", "unk_token": "unknown", "pad_token": "padding"}
    ids = {name: f"tokenizer.ggml.{key}_token_id" for name, key in names.items()}
    return {name: tokens[int(_scalar(md, key))] for name, key in ids.items() if key in md}


def write_tokenizer(md: dict[str, Any], folder: Path) -> None:
    """Write ``tokenizer.json`` and ``tokenizer_config.json`` (with the chat template) into ``folder``."""
    tok, config = build_tokenizer(md)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False))


