"""Chat examples tokenized once, truncated, length-bucketable, cached on disk.

mlx-lm's ``ChatDataset`` + ``CacheDataset`` tokenize one example at a time
(~2 ms each through the chat template: ~26 s for MedQuAD's train split, every
run), and ``CacheDataset.itemlen`` returns the number of keys of the raw record,
so ``iterate_batches`` does not actually sort by length. Here every example is
rendered with the model's own chat template, the texts are batch-encoded by the
fast tokenizer, cut to ``max_seq_length`` at the last whole sentence (see
:func:`encode_chats`; examples with no answer token left are dropped), and saved
next to the split so later runs and trials load them in milliseconds. Items are ``(tokens, prompt_length)``, exactly what
mlx-lm's trainer and ``default_loss`` expect; ``len(item[0])`` is the true
length, so ``iterate_batches`` buckets by length and pads less.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np

from medlora.config.schema import TRUNCATIONS
from medlora.files import write_file

CACHE_VERSION = 2
_SENTENCE_END = (".", "!", "?")


class TokenizedChat:
    """A list of ``(token_ids, prompt_length)`` pairs, the dataset type mlx-lm's trainer iterates."""

    def __init__(self, tokens: list[list[int]], prompt_lengths: list[int]):
        self.tokens = tokens
        self.prompt_lengths = prompt_lengths

    def __getitem__(self, idx: int) -> tuple[list[int], int]:
        return self.tokens[idx], self.prompt_lengths[idx]

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def n_tokens(self) -> int:
        return sum(len(t) for t in self.tokens)


def encode_chats(rows: list[dict], tokenizer, *, mask_prompt: bool, max_seq_length: int,
                 truncation: str = "sentence") -> TokenizedChat:
    """Tokenize chat records (``{"messages": [..., assistant]}``) with the model's chat template.

    An example longer than ``max_seq_length`` is cut. ``truncation="hard"`` cuts it
    mid-sentence, as mlx-lm does: the model then never sees that answer end, and
    with most MedQuAD answers longer than the budget it learns answers that do not
    stop. ``"sentence"`` keeps the answer up to its last whole sentence that fits and
    closes the turn (``<|im_end|>``), so every example teaches an answer that ends;
    an answer whose first sentence alone does not fit is cut hard. ``"open"`` cuts at the
    same sentence but leaves the turn open: a cut answer did not end there (it is
    censored), so only answers that really end teach where answers stop.
    """
    if truncation not in TRUNCATIONS:
        raise ValueError(f"truncation={truncation!r} is not one of {TRUNCATIONS}")
    template = tokenizer.apply_chat_template
    full = [template(r["messages"], tokenize=False) for r in rows]
    tokens = _batch_encode(tokenizer, full)
    if mask_prompt:
        prompts = [template(r["messages"][:-1], add_generation_prompt=True, tokenize=False) for r in rows]
        offsets = [len(t) for t in _batch_encode(tokenizer, prompts)]
    else:
        offsets = [0] * len(rows)
    closer = (_SentenceCloser(tokenizer, rows[0]["messages"], full[0], close=truncation == "sentence")
              if rows and truncation != "hard" else None)
    kept_tokens, kept_offsets = [], []
    for toks, offset in zip(tokens, offsets):
        if len(toks) > max_seq_length:
            cut = closer.cut(toks, offset, max_seq_length) if closer else None
            toks = cut if cut is not None else toks[:max_seq_length]
        if offset < len(toks) - 1:  # at least one answer token survives truncation
            kept_tokens.append(toks)
            kept_offsets.append(offset)
    return TokenizedChat(kept_tokens, kept_offsets)


class _SentenceCloser:
    """Cuts a token sequence after its last sentence end that leaves room for the turn's closing tokens, and
    appends them (``close``) or not (``open`` truncation: the same cut, so the two differ only in the ending)."""

    def __init__(self, tokenizer, messages: list[dict], rendered: str, close: bool = True) -> None:
        self.close = close
        answer = str(messages[-1]["content"]).strip()
        at = rendered.rfind(answer) if answer else -1
        # What the chat template writes after an answer (SmolLM2: "<|im_end|>\n"; Gemma: "<end_of_turn>\n").
        self.suffix = _batch_encode(tokenizer, [rendered[at + len(answer):]])[0] if at >= 0 else []
        self._decode = tokenizer.decode
        self._pieces: dict[int, str] = {}

    def _piece(self, token: int) -> str:
        if token not in self._pieces:
            self._pieces[token] = self._decode([token])
        return self._pieces[token]

    def cut(self, toks: list[int], offset: int, limit: int) -> list[int] | None:
        if not self.suffix:
            return None
        # keep toks[:j]: it must end a sentence ("." then whitespace, so "1.5" and "e.g.x" are not ends)
        for j in range(min(limit - len(self.suffix), len(toks) - 1), offset, -1):
            if self._piece(toks[j - 1]).rstrip().endswith(_SENTENCE_END) and self._piece(toks[j])[:1].isspace():
                return toks[:j] + self.suffix if self.close else toks[:j]
        return None


def _batch_encode(tokenizer, texts: list[str]) -> list[list[int]]:
    # The chat template already wrote every special token: add none.
    hf = getattr(tokenizer, "_tokenizer", tokenizer)
    return hf(texts, add_special_tokens=False)["input_ids"]


def cached_encode(
    rows: list[dict], tokenizer, *, cache_dir: Path, cache_key: str, mask_prompt: bool, max_seq_length: int,
    truncation: str = "sentence",
) -> TokenizedChat:
    """``encode_chats``, memoised in ``cache_dir`` under a key of the inputs (atomic writes)."""
    key = f"{CACHE_VERSION}|{cache_key}|{mask_prompt}|{max_seq_length}|{truncation}|{len(rows)}"
    digest = hashlib.sha256(key.encode())
    path = cache_dir / f"{digest.hexdigest()[:16]}.npz"
    if path.exists():
        with np.load(path) as z:
            flat, lengths, offsets = z["flat"], z["lengths"], z["offsets"]
        bounds = np.concatenate([[0], np.cumsum(lengths)])
        tokens = [flat[bounds[i] : bounds[i + 1]].tolist() for i in range(len(lengths))]
        return TokenizedChat(tokens, offsets.tolist())
    data = encode_chats(rows, tokenizer, mask_prompt=mask_prompt, max_seq_length=max_seq_length,
                        truncation=truncation)
    buffer = io.BytesIO()
    np.savez(
        buffer,
        flat=np.fromiter((t for seq in data.tokens for t in seq), dtype=np.int32),
        lengths=np.array([len(t) for t in data.tokens], dtype=np.int64),
        offsets=np.array(data.prompt_lengths, dtype=np.int64),
    )
    write_file(path, buffer.getvalue())
    return data
