"""Two decoding rules for small models' answers, as mlx-lm logits processors.

- ``no_repeat(n, header)``: an answer never repeats a run of ``n`` tokens. A 135M model falls
  into loops ("consult your doctor ... consult your doctor ..."); mlx-lm's repetition penalty
  only makes them slower. Only the answer's own tokens count, the question may be quoted.
- ``end_when_sure(p, end_ids)``: an answer ends only when the model gives its end tokens a
  probability of at least ``p`` together; below, ending is ruled out. Under greedy decoding a
  fine-tuned model ends as soon as the end token is merely the likeliest (often at 0.2-0.4),
  mid-thought.

Both see the whole context (prompt + answer so far) and find where the answer starts by the
last occurrence of the chat template's answer header (``answer_header``), so one processor
serves every sequence of a batch and every turn of a conversation. Everything is lazy mlx
arithmetic: no synchronisation per token.
"""

from __future__ import annotations

import mlx.core as mx

_RULED_OUT = -1e9


def answer_header(tokenizer) -> list[int]:
    """Token ids the chat template appends to open the assistant's answer ([] if it cannot tell)."""
    messages = [{"role": "user", "content": "?"}]
    opened = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=False)
    closed = tokenizer.apply_chat_template(messages, add_generation_prompt=False, return_dict=False)
    if len(opened) > len(closed) and opened[: len(closed)] == closed:
        return list(opened[len(closed):])
    return []


def _answer_start(tokens: mx.array, header: list[int]) -> mx.array:
    """Index of the answer's first token: right after the header's last occurrence (0 when absent)."""
    k, length = len(header), tokens.size
    if not k or length < k:
        return mx.array(0)
    found = mx.ones(length - k + 1, dtype=mx.bool_)
    for j, token in enumerate(header):
        found = found & (tokens[j : length - k + 1 + j] == token)
    positions = mx.where(found, mx.arange(length - k + 1) + k, 0)
    return positions.max()


def no_repeat(n: int, header: list[int]):
    """Rule out each token that would complete a run of ``n`` tokens the answer already holds."""

    def processor(tokens: mx.array, logits: mx.array) -> mx.array:
        length = tokens.size
        if length < n:
            return logits
        start = _answer_start(tokens, header)
        windows = length - n + 1  # runs of n tokens whose last token is already in the context
        same = mx.arange(windows) >= start  # the run lies inside the answer
        for j in range(n - 1):  # ... and starts with the answer's last n-1 tokens
            same = same & (tokens[j : windows + j] == tokens[length - n + 1 + j])
        same = same & (length - n + 1 >= start)  # those n-1 tokens are the answer's too
        penalty = mx.zeros(logits.shape[-1]).at[tokens[n - 1 :]].add(mx.where(same, _RULED_OUT, 0.0))
        return logits + penalty[None]

    return processor


def end_when_sure(p: float, end_ids: list[int]):
    """End the answer when the end tokens' joint probability reaches ``p``; rule ending out below it."""
    ids = mx.array(sorted(end_ids))

    def processor(tokens: mx.array, logits: mx.array) -> mx.array:
        log_probs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        p_end = mx.exp(log_probs[:, ids]).sum(axis=-1, keepdims=True)
        is_end = mx.zeros(logits.shape[-1], dtype=mx.int32).at[ids].add(1) > 0
        return mx.where(is_end, mx.where(p_end >= p, -_RULED_OUT, _RULED_OUT), logits)

    return processor
