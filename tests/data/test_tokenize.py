"""Tokenized chat datasets: identical to mlx-lm's ChatDataset, truncated safely, cached on disk."""

from __future__ import annotations

import pytest
from mlx_lm.tuner.datasets import ChatDataset

from medlora.data import splits as data
from medlora.models import load as models
from medlora.config import load_run_config
from medlora.data.tokenize import cached_encode, encode_chats


@pytest.fixture(scope="module")
def rows_and_tokenizer(tmp_path_factory, model_cache, small_csv):
    root = tmp_path_factory.mktemp("ds")
    cfg = load_run_config(["model=tiny_random", f"paths.models={model_cache}"])
    _, tokenizer = models.load_model(cfg.model, cfg.paths.models)
    split = data.prepare(small_csv, root, train_fraction=0.8, valid_fraction=0.1, test_fraction=0.1, seed=0)
    return data.load_split(split, "train")[:60], tokenizer


@pytest.mark.parametrize("mask_prompt", [True, False])
def test_encoding_matches_mlx_lm_chat_dataset(rows_and_tokenizer, mask_prompt):
    rows, tokenizer = rows_and_tokenizer
    reference = ChatDataset(rows, tokenizer, mask_prompt=mask_prompt)
    ours = encode_chats(rows, tokenizer, mask_prompt=mask_prompt, max_seq_length=10**6)
    assert len(ours) == len(rows)
    for i, row in enumerate(rows):
        tokens, offset = reference.process(row)
        assert ours[i] == (list(tokens), offset)


def test_truncation_keeps_only_examples_with_an_answer_token(rows_and_tokenizer):
    rows, tokenizer = rows_and_tokenizer
    full = encode_chats(rows, tokenizer, mask_prompt=True, max_seq_length=10**6)
    limit = sorted(full.prompt_lengths)[len(rows) // 2] + 1  # about half the prompts fill the limit
    cut = encode_chats(rows, tokenizer, mask_prompt=True, max_seq_length=limit, truncation="hard")
    assert 0 < len(cut) < len(full)
    for tokens, offset in (cut[i] for i in range(len(cut))):
        assert len(tokens) <= limit and offset < len(tokens) - 1


def test_sentence_truncation_ends_long_answers_at_a_sentence_and_closes_the_turn(rows_and_tokenizer):
    rows, tokenizer = rows_and_tokenizer
    full = encode_chats(rows, tokenizer, mask_prompt=True, max_seq_length=10**6)
    limit = 96
    cut = encode_chats(rows, tokenizer, mask_prompt=True, max_seq_length=limit, truncation="sentence")
    hard = encode_chats(rows, tokenizer, mask_prompt=True, max_seq_length=limit, truncation="hard")
    assert len(cut) == len(hard) == len(full)  # no prompt fills 96 tokens here
    closing = full[0][0][-2:]  # every full rendering ends with the turn's closing tokens
    assert tokenizer.decode(closing).startswith("<|im_end|>")
    n_closed = 0
    for i in range(len(full)):
        (whole, offset), (tokens, cut_offset) = full[i], cut[i]
        assert cut_offset == offset and len(tokens) <= limit
        if len(whole) <= limit:
            assert tokens == whole  # examples that fit are untouched
            continue
        if tokens == hard[i][0]:
            continue  # the first sentence alone did not fit: cut hard
        n_closed += 1
        assert tokens[-len(closing):] == closing
        kept = tokens[offset:-len(closing)]
        assert whole[offset:offset + len(kept)] == kept  # a prefix of the answer ...
        assert tokenizer.decode(kept).rstrip().endswith((".", "!", "?"))  # ... ending a sentence
        assert tokenizer.decode(whole[offset + len(kept):offset + len(kept) + 1])[:1].isspace()
    assert n_closed >= len(full) // 4  # MedQuAD answers are long: many are cut, most at a sentence


def test_open_truncation_cuts_at_the_same_sentence_but_leaves_the_turn_open(rows_and_tokenizer):
    rows, tokenizer = rows_and_tokenizer
    full = encode_chats(rows, tokenizer, mask_prompt=True, max_seq_length=10**6)
    closed = encode_chats(rows, tokenizer, mask_prompt=True, max_seq_length=96, truncation="sentence")
    opened = encode_chats(rows, tokenizer, mask_prompt=True, max_seq_length=96, truncation="open")
    closing = full[0][0][-2:]
    n_open = 0
    for i in range(len(full)):
        whole, (tokens, offset) = full[i][0], opened[i]
        if len(whole) <= 96:
            assert tokens == whole  # an answer that fits still ends: the model learns where answers stop
        elif closed[i][0][-len(closing):] == closing:  # cut at a sentence: the same sentence, no end of turn
            n_open += 1
            assert tokens == whole[:len(tokens)] and tokens[-len(closing):] != closing
            assert tokens[offset:] == closed[i][0][offset:-len(closing)]
    assert n_open >= len(full) // 4


def test_cache_round_trips_and_is_keyed(rows_and_tokenizer, tmp_path):
    rows, tokenizer = rows_and_tokenizer
    first = cached_encode(rows, tokenizer, cache_dir=tmp_path, cache_key="k", mask_prompt=True, max_seq_length=128)
    assert len(list(tmp_path.glob("*.npz"))) == 1
    again = cached_encode(rows, tokenizer, cache_dir=tmp_path, cache_key="k", mask_prompt=True, max_seq_length=128)
    assert again.tokens == first.tokens and again.prompt_lengths == first.prompt_lengths
    cached_encode(rows, tokenizer, cache_dir=tmp_path, cache_key="k", mask_prompt=True, max_seq_length=64)
    assert len(list(tmp_path.glob("*.npz"))) == 2
    cached_encode(rows, tokenizer, cache_dir=tmp_path, cache_key="k", mask_prompt=True, max_seq_length=64,
                  truncation="hard")
    assert len(list(tmp_path.glob("*.npz"))) == 3
