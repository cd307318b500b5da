"""What the two answer rules cost per generated token (docs/evaluation.md, "Two rules at answer time").

    .venv/bin/python bench/answer_rules_cost.py                 # the embedded model, untuned
    .venv/bin/python bench/answer_rules_cost.py --batch 1       # one answer at a time, as `ask` streams

In one invocation, on the same model and questions (the consumer set's valid half), the answers are
decoded with every answer length fixed (the end ruled out, ``--tokens`` each) so that only the
per-token work differs, alternately with and without the rules, ``--rounds`` times: (a) mlx-lm's
repetition penalty alone, (b) + no repeated run of 4 tokens, (c) + an end only when sure. Printed:
seconds per generated token of each and the ratios b/a and c/a (median over rounds; the machine is shared).
"""

from __future__ import annotations

import argparse
import statistics
import time

import medlora  # noqa: F401  - the optimized BLAS before mlx
import mlx.core as mx
from mlx_lm.generate import batch_generate

from medlora.config import load_run_config
from medlora.data.consumer import consumer_records
from medlora.models.generation import chat_prompt, decoding, stop_at_special_tokens
from medlora.models.load import load_model


def seconds_per_token(model, tokenizer, prompts, settings, tokens: int) -> float:
    kwargs = decoding(settings, tokenizer)
    ends = mx.array(sorted(tokenizer.eos_token_ids))
    never_end = lambda _, logits: logits.at[:, ends].add(-3e9)  # noqa: E731 - fixed lengths (the end never sure)
    kwargs["logits_processors"] = [*kwargs["logits_processors"], never_end]
    start = time.perf_counter()
    result = batch_generate(model, tokenizer, prompts, max_tokens=tokens, return_token_ids=True, **kwargs)
    generated = sum(len(ids) for ids in result.token_ids)
    return (time.perf_counter() - start) / generated


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32, help="answers decoded together (evaluate's default: 32)")
    parser.add_argument("--tokens", type=int, default=128, help="tokens generated per answer")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    cfg = load_run_config([])
    model, tokenizer = load_model(cfg.model, cfg.paths.models)
    stop_at_special_tokens(tokenizer)
    questions = [r["messages"][-2]["content"] for r in consumer_records(cfg, "valid")][: args.batch]
    prompts = [chat_prompt(tokenizer, q, cfg.data.system_prompt) for q in questions]
    g = cfg.generation
    variants = {"(a) penalty only": g.model_copy(update={"no_repeat_ngram": 0, "end_probability": 0.0}),
                "(b) + no repeated run": g.model_copy(update={"end_probability": 0.0}),
                "(c) + end when sure": g}
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, settings in variants.items():
            seconds[name].append(seconds_per_token(model, tokenizer, prompts, settings, args.tokens))
    median = {name: statistics.median(values) for name, values in seconds.items()}
    print(f"{len(prompts)} answers x {args.tokens} tokens, decoded {args.batch} at a time, {args.rounds} rounds")
    for name, value in median.items():
        print(f"  {name:24s} {value * 1e3:7.2f} ms per token   x{value / median['(a) penalty only']:.2f}")


if __name__ == "__main__":
    main()
