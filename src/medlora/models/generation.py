"""Generate answers with a model (base, or base + LoRA adapter): one, streamed, or many in batches.

Prompts are built with the model's own chat template (never one family's
hard-coded tokens). Decoding follows a :class:`~medlora.config.GenerationConfig`
(greedy when none is given) and stops at the model's end-of-turn token.
"""

from __future__ import annotations

from collections.abc import Iterator

import mlx.core as mx
from mlx_lm.generate import stream_generate
from mlx_lm.sample_utils import make_logits_processors, make_sampler

from medlora.config import GenerationConfig
from medlora.errors import UserError
from medlora.models.answer_rules import answer_header, end_when_sure, folded_ids, no_repeat
from medlora.models.load import load_model


def chat_prompt(tokenizer, question: str, system_prompt: str | None = None) -> list[int]:
    """Token ids of the chat-formatted question, ending where the assistant's answer starts."""
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    messages.append({"role": "user", "content": question})
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=False)


def decoding(settings: GenerationConfig | None, tokenizer) -> dict:
    """``stream_generate`` / ``batch_generate`` keyword arguments for ``settings`` (None: greedy, no rule).

    Logits processors: mlx-lm's repetition penalty, then medlora's first answer rule (``answer_rules``):
    no repeated run of ``no_repeat_ngram`` tokens. The sampler (:func:`sampler`) holds the second: an
    end only when the model is ``end_probability`` sure, weighed against the tokens the run rule leaves,
    so an answer about to loop ends there when ending was the model's next choice.
    """
    if settings is None:
        return {}
    processors = make_logits_processors(repetition_penalty=settings.repetition_penalty,
                                        repetition_context_size=settings.repetition_context)
    if settings.no_repeat_ngram:
        folded = word_ids(tokenizer) if settings.no_repeat_words else None
        processors.append(no_repeat(settings.no_repeat_ngram, answer_header(tokenizer), folded))
    return {"sampler": sampler(settings, tokenizer), "logits_processors": processors}


def word_ids(tokenizer) -> list[int] | None:
    """``folded_ids`` of ``tokenizer``, worked out once per tokenizer (~0.1 s for 49k tokens)."""
    if not hasattr(tokenizer, "_medlora_word_ids"):
        tokenizer._medlora_word_ids = folded_ids(tokenizer)
    return tokenizer._medlora_word_ids


def sampler(settings: GenerationConfig, tokenizer, *, temperature: float | None = None, top_p: float | None = None):
    """mlx-lm's sampler for ``settings`` (``temperature`` / ``top_p``: a request's own), with the end rule."""
    chosen = make_sampler(temp=settings.temperature if temperature is None else temperature,
                          top_p=settings.top_p if top_p is None else top_p)
    if not settings.end_probability:
        return chosen
    stop_at_special_tokens(tokenizer)
    return end_when_sure(settings.end_probability, sorted(tokenizer.eos_token_ids), chosen)


def stop_at_special_tokens(tokenizer) -> None:
    """Make every special token end an answer, not only the chat template's end-of-turn.

    A fine-tuned small model can close its answer with another family member (SmolLM2 after a
    few LoRA steps emits ``<|endoftext|>`` instead of ``<|im_end|>``) and then ramble on into
    unrelated text. No special token belongs inside an answer, so all of them stop decoding.
    """
    special = set(getattr(tokenizer, "all_special_ids", None) or [])
    tokenizer.eos_token_ids = set(tokenizer.eos_token_ids) | special


def stream_answer(
    model, tokenizer, question: str, *, max_tokens: int, system_prompt: str | None = None,
    settings: GenerationConfig | None = None,
) -> Iterator[str]:
    """Yield the answer's text piece by piece; it ends at any special token (see stop_at_special_tokens)."""
    stop_at_special_tokens(tokenizer)
    prompt = chat_prompt(tokenizer, question, system_prompt)
    for response in stream_generate(model, tokenizer, prompt, max_tokens=max_tokens, **decoding(settings, tokenizer)):
        yield response.text


def generate_answer(
    model, tokenizer, question: str, *, max_tokens: int, system_prompt: str | None = None,
    settings: GenerationConfig | None = None,
) -> str:
    """The whole answer as one string, whitespace-trimmed."""
    pieces = stream_answer(model, tokenizer, question, max_tokens=max_tokens, system_prompt=system_prompt,
                           settings=settings)
    return "".join(pieces).strip()


def generate_answers(
    model, tokenizer, questions: list[str], *, max_tokens: int, system_prompt: str | None = None,
    settings: GenerationConfig | None = None, batch_size: int = 16, on_batch=None,
) -> list[str]:
    """Answers to many questions, decoded ``batch_size`` at a time (mlx-lm's ``batch_generate``).

    On a CPU, decoding one sequence reads every weight per token (memory-bound: ~12 tokens/s for
    the float32 135M model on 2 cores); a batch shares each read among its sequences.
    ``on_batch(n)`` is called after each batch of ``n`` answers (progress bars).
    """
    from mlx_lm.generate import batch_generate

    stop_at_special_tokens(tokenizer)
    answers = []
    for start in range(0, len(questions), batch_size):
        prompts = [chat_prompt(tokenizer, q, system_prompt) for q in questions[start : start + batch_size]]
        result = batch_generate(model, tokenizer, prompts, max_tokens=max_tokens, **decoding(settings, tokenizer))
        answers += [text.strip() for text in result.texts]
        if on_batch is not None:
            on_batch(len(prompts))
    return answers


def load_with_adapter(run_cfg, adapter_dir):
    """Base model + the LoRA adapter in ``adapter_dir`` at ``generation.adapter_strength``, weights read into
    memory; returns (model, tokenizer)."""
    from mlx_lm.tuner.utils import load_adapters

    model, tokenizer = load_model(run_cfg.model, run_cfg.paths.models)
    load_adapters(model, str(adapter_dir))
    weigh_adapter(model, run_cfg.generation.adapter_strength)
    mx.eval(model.parameters())  # read the weights before a temporary folder goes away
    model.eval()
    return model, tokenizer


def weigh_adapter(model, strength: float) -> None:
    """Multiply every LoRA layer's update by ``strength``: the weights W + strength * (scale * B A), on the
    straight line between the untuned model (0) and the trained adapter (1) (WiSE-FT's interpolation;
    docs/evaluation.md)."""
    from mlx_lm.tuner.dora import DoRAEmbedding, DoRALinear
    from mlx_lm.tuner.lora import LoRAEmbedding, LoRALinear, LoRASwitchLinear

    modules = [m for _, m in model.named_modules()]
    if strength != 1 and any(isinstance(m, (DoRALinear, DoRAEmbedding)) for m in modules):
        raise UserError("a DoRA adapter cannot be weighed: its update is not a straight line from the untuned "
                        "weights (fix: generation.adapter_strength=1)")
    for layer in modules:
        if isinstance(layer, (LoRALinear, LoRASwitchLinear, LoRAEmbedding)):
            layer.scale = layer.scale * strength
