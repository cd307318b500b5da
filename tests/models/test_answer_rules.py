"""The answer rules: no repeated run of n tokens inside the answer, an end only when the model is sure."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from mlx_lm.generate import batch_generate
from mlx_lm.sample_utils import greedy_sampler

from medlora.config import load_run_config
from medlora.models import load as models
from medlora.models.answer_rules import answer_header, end_when_sure, no_repeat
from medlora.models.generation import chat_prompt, decoding

HEADER = [1, 2]  # the answer opens after the last "1 2"
VOCAB = 12


def ruled_out(processor, tokens: list[int]) -> set[int]:
    logits = processor(mx.array(tokens), mx.zeros((1, VOCAB)))
    return set(np.flatnonzero(np.array(logits[0]) < -1e6).tolist())


def test_the_token_that_would_repeat_a_run_of_the_answer_is_ruled_out():
    rule = no_repeat(3, HEADER)
    # answer: 5 6 7 8 5 6 -> "5 6 7" would repeat
    assert ruled_out(rule, [9, 9, *HEADER, 5, 6, 7, 8, 5, 6]) == {7}
    # answer: 5 6 7 8 5 6 9 5 6 -> "5 6" went on with 7 and with 9: both ruled out
    assert ruled_out(rule, [*HEADER, 5, 6, 7, 8, 5, 6, 9, 5, 6]) == {7, 9}
    assert ruled_out(rule, [*HEADER, 5, 6, 7, 8]) == set()


def test_runs_of_the_question_may_be_repeated_in_the_answer():
    rule = no_repeat(3, HEADER)
    # the question holds "5 6 7"; the answer quotes "5 6": 7 stays allowed
    assert ruled_out(rule, [5, 6, 7, *HEADER, 5, 6]) == set()
    # a second turn: only the last answer counts
    assert ruled_out(rule, [*HEADER, 5, 6, 7, 3, *HEADER, 5, 6]) == set()


def test_the_end_is_taken_when_sure_and_ruled_out_below():
    rule = end_when_sure(0.5, [10, 11], greedy_sampler)
    # end 0.4 together, though 10 alone is the likeliest token: not sure, the likeliest other token
    unsure = [0.25] + [0.35 / 9] * 9 + [0.3, 0.1]
    sure = [0.3] + [0.1 / 9] * 9 + [0.2, 0.4]  # end 0.6 together: the likelier end token
    assert greedy_sampler(mx.log(mx.array([unsure]))).tolist() == [10]
    assert rule(mx.log(mx.array([unsure, sure]))).tolist() == [0, 11]


@pytest.mark.parametrize("n", [3, 4])
def test_answers_decoded_with_the_rule_repeat_no_run(model_cache, n):
    cfg = load_run_config(["model=tiny_random", f"paths.models={model_cache}", "generation.repetition_penalty=1.0",
                           "generation.end_probability=0", "generation.no_repeat_ngram=0"])
    model, tokenizer = models.load_model(cfg.model, cfg.paths.models)
    assert chat_prompt(tokenizer, "What is glaucoma?")[-len(answer_header(tokenizer)):] == answer_header(tokenizer)
    questions = ["What is glaucoma?", "How is asthma treated?"]

    def repeated_runs(settings) -> int:
        prompts = [chat_prompt(tokenizer, q) for q in questions]
        answers = batch_generate(model, tokenizer, prompts, max_tokens=48, return_token_ids=True,
                                 **decoding(settings, tokenizer)).token_ids
        assert min(map(len, answers)) >= 2 * n
        return sum(len(x) - n + 1 - len({tuple(x[i : i + n]) for i in range(len(x) - n + 1)}) for x in answers)

    assert repeated_runs(cfg.generation) > 0  # a tiny random model loops ("\n\n\n...")
    assert repeated_runs(cfg.generation.model_copy(update={"no_repeat_ngram": n})) == 0


def test_with_words_folded_a_run_in_another_case_or_spacing_is_a_repeat():
    # ids 5 and 7 spell one word ("If" / " if"), 6 and 8 another ("you" / " You"); 9, 10, 11 stand alone
    folded = [0, 1, 2, 3, 4, 5, 6, 5, 6, 9, 10, 11]
    rule, plain = no_repeat(3, HEADER, folded), no_repeat(3, HEADER)
    answer = [*HEADER, 5, 6, 9, 3, 7, 8]  # "If you have . if You" -> "have" (9) would repeat "if you have"
    assert ruled_out(plain, answer) == set()
    assert ruled_out(rule, answer) == {9}
    # the ruled-out word is ruled out in every spelling: "If you" then "if You" -> both 5 and 7 after "have"
    assert ruled_out(rule, [*HEADER, 9, 5, 6, 3, 9, 7]) == {6, 8}


def test_the_models_tokenizer_folds_case_and_leading_space_only(model_cache):
    from medlora.models.answer_rules import folded_ids

    cfg = load_run_config(["model=tiny_random", f"paths.models={model_cache}"])
    _, tokenizer = models.load_model(cfg.model, cfg.paths.models)
    folded = folded_ids(tokenizer)
    ids = tokenizer._tokenizer.convert_tokens_to_ids
    assert len({folded[i] for i in ids(["If", "\u0120if", "\u0120If", "if"])}) == 1
    assert folded[ids("\u0120the")] != folded[ids("\u0120then")]
    assert folded[ids("\u00c3")] != folded[ids("\u00e3")]  # byte-level letters for other bytes keep their case
