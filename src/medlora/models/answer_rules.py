"""Two decoding rules for small models' answers: an mlx-lm logits processor and an mlx-lm sampler.

- ``no_repeat(n, header)``: an answer never repeats a run of ``n`` tokens. A 135M model falls
  into loops ("consult your doctor ... consult your doctor ..."); mlx-lm's repetition penalty
  only makes them slower. Only the answer's own tokens count, the question may be quoted.
- ``end_when_sure(p, end_ids, sampler)``: an answer ends only when the model gives its end tokens a
  probability of at least ``p`` together; below, ending is ruled out. Under greedy decoding a
  fine-tuned model ends as soon as the end token is merely the likeliest (often at 0.2-0.4),
  mid-thought.

``no_repeat`` sees the whole context (prompt + answer so far) and finds where the answer starts by
the last occurrence of the chat template's answer header (``answer_header``), so one processor
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


_SPACE_MARKS = "\u0120\u010a\u0109\u2581 \t\n"  # byte-level BPE's space / newline / tab, SentencePiece's space
_UPPER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")  # ASCII only: byte-level
# BPE spells other bytes with letters that must keep their case


def folded_ids(tokenizer) -> list[int] | None:
    """For each token id, one id standing for every token that spells the same word up to case and a leading
    space ("If", " if", " If" -> one id), so that ``no_repeat`` sees "If you have a ... if you have a" as the
    repeat it is. None when the tokenizer cannot list its tokens."""
    inner = getattr(tokenizer, "_tokenizer", tokenizer)  # mlx-lm's TokenizerWrapper holds the Hugging Face one
    convert = getattr(inner, "convert_ids_to_tokens", None)
    try:
        size = len(inner)
    except TypeError:
        return None
    if convert is None or not size:
        return None
    first: dict[str, int] = {}
    folded = []
    for token_id, token in enumerate(convert(list(range(size)))):
        key = (token or "").lstrip(_SPACE_MARKS).translate(_UPPER) or token or str(token_id)
        folded.append(first.setdefault(key, token_id))
    return folded


def no_repeat(n: int, header: list[int], folded: list[int] | None = None):
    """Rule out each token that would complete a run of ``n`` tokens the answer already holds; with
    ``folded`` (:func:`folded_ids`), runs are compared and ruled out as words, whatever their case and spacing."""
    tables: dict[int, mx.array] = {}

    def fold(vocab: int) -> mx.array:  # ids past the tokenizer's list stand for themselves
        if vocab not in tables:
            tables[vocab] = mx.array(list(folded[:vocab]) + list(range(len(folded), vocab)))
        return tables[vocab]

    def processor(tokens: mx.array, logits: mx.array) -> mx.array:
        length, vocab = tokens.size, logits.shape[-1]
        if length < n:
            return logits
        start = _answer_start(tokens, header)
        seq = fold(vocab)[tokens] if folded else tokens
        windows = length - n + 1  # runs of n tokens whose last token is already in the context
        same = mx.arange(windows) >= start  # the run lies inside the answer
        for j in range(n - 1):  # ... and starts with the answer's last n-1 tokens
            same = same & (seq[j : windows + j] == seq[length - n + 1 + j])
        same = same & (length - n + 1 >= start)  # those n-1 tokens are the answer's too
        penalty = mx.zeros(vocab).at[seq[n - 1 :]].add(mx.where(same, _RULED_OUT, 0.0))
        if folded:  # every spelling of a ruled-out word
            penalty = penalty[fold(vocab)]
        return logits + penalty[None]

    return processor


def end_when_sure(p: float, end_ids: list[int], sampler):
    """``sampler`` (mlx-lm's: log-probabilities in, tokens out) that ends the answer when the end tokens'
    joint probability reaches ``p`` (with the likeliest of them) and never ends below it.

    A sampler, not a logits processor: mlx-lm hands it log-probabilities it has normalised anyway,
    so the rule costs no vocabulary-wide ``exp`` of its own (~1 ms per answer and token on 2 cores,
    10% of a step when 32 answers are decoded together)."""
    ids = mx.array(sorted(end_ids))

    def sample(logprobs: mx.array) -> mx.array:
        ends = logprobs[:, ids]
        sure = mx.exp(ends).sum(axis=-1) >= p
        otherwise = sampler(logprobs.at[:, ids].add(-mx.inf))  # the end ruled out
        return mx.where(sure, ids[mx.argmax(ends, axis=-1)], otherwise)

    return sample
