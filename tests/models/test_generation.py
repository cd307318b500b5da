"""Decoding stops at any special token: a fine-tuned model ending with <|endoftext|> does not ramble on."""

from __future__ import annotations

import mlx.core as mx
from mlx_lm.generate import stream_generate

from medlora.models import load as models
from medlora.models.generation import chat_prompt, stop_at_special_tokens
from medlora.config import load_run_config


def test_generation_ends_at_a_special_token_other_than_end_of_turn(model_cache):
    cfg = load_run_config(["model=tiny_random", f"paths.models={model_cache}"])
    model, tokenizer = models.load_model(cfg.model, cfg.paths.models)
    end_of_text = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert end_of_text not in tokenizer.eos_token_ids  # the chat template's end of turn is <|im_end|>
    word = tokenizer.encode("eye", add_special_tokens=False)[0]

    def force(tokens, logits):  # "eye eye eye <|endoftext|> eye eye ..."
        step = len(tokens) - len(prompt)
        wanted = end_of_text if step == 3 else word
        return mx.where(mx.arange(logits.shape[-1]) == wanted, 100.0, -100.0)[None]

    prompt = chat_prompt(tokenizer, "What is glaucoma?")
    unstopped = [r.token for r in stream_generate(model, tokenizer, prompt, max_tokens=8, logits_processors=[force])]
    assert len(unstopped) == 8 and end_of_text in unstopped
    stop_at_special_tokens(tokenizer)
    stopped = [r.token for r in stream_generate(model, tokenizer, prompt, max_tokens=8, logits_processors=[force])]
    assert stopped == [word, word, word, end_of_text]
