"""Answer a question with a model (base, or base + LoRA adapter).

Prompts are built with the model's own chat template (never one family's
hard-coded tokens). Decoding is greedy and stops at the end of the turn.
"""

from __future__ import annotations

from collections.abc import Iterator

import mlx.core as mx
from mlx_lm.generate import stream_generate


def chat_prompt(tokenizer, question: str, system_prompt: str | None = None) -> list[int]:
    """Token ids of the chat-formatted question, ending where the assistant's answer starts."""
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    messages.append({"role": "user", "content": question})
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=False)


def stream_answer(
    model, tokenizer, question: str, *, max_tokens: int, system_prompt: str | None = None
) -> Iterator[str]:
    """Yield the answer's text piece by piece (greedy decoding)."""
    prompt = chat_prompt(tokenizer, question, system_prompt)
    for response in stream_generate(model, tokenizer, prompt, max_tokens=max_tokens):
        yield response.text


def generate_answer(
    model, tokenizer, question: str, *, max_tokens: int, system_prompt: str | None = None
) -> str:
    """The whole answer as one string, whitespace-trimmed."""
    return "".join(stream_answer(model, tokenizer, question, max_tokens=max_tokens, system_prompt=system_prompt)).strip()


def load_with_champion(run_cfg):
    """Base model + the registry's ``champion`` adapter for ``run_cfg.model``; returns (model, tokenizer, version)."""
    import tempfile

    from mlx_lm.tuner.utils import load_adapters

    from medlora import models
    from medlora.promote import champion_adapter

    with tempfile.TemporaryDirectory(prefix="medlora-champion-") as tmp:
        adapter_dir, version = champion_adapter(run_cfg, tmp)
        model, tokenizer = models.load_model(run_cfg.model, run_cfg.paths.models)
        load_adapters(model, str(adapter_dir))
        mx.eval(model.parameters())  # read the weights before the folder goes away
    model.eval()
    return model, tokenizer, version


def retrieve(run_cfg, question: str, k: int) -> list:
    """The ``k`` training records most related to ``question`` (BM25), for citations and RAG context."""
    if k <= 0:
        return []
    from medlora import data
    from medlora.retrieval import BM25

    split_dir = data.prepare_from_config(run_cfg.data, run_cfg.paths.processed)
    return BM25(data.load_split(split_dir, "train")).search(question, k)

