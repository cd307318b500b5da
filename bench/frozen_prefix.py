"""Validation time with and without the frozen-prefix cache (train.cache_frozen_prefix), side by side.

    .venv/bin/python bench/frozen_prefix.py [--layers 4 8 16] [--rounds 3] [key=value ...]

What a study's trial does at each evaluation: mlx-lm's ``evaluate`` over the fixed validation
subset (the study's 32 questions, eval batch 8), with medlora's loss, on the embedded model with
LoRA on the last ``--layers`` blocks (adapters perturbed so that they matter). Per LoRA depth,
evaluations alternate cache off / cache on for ``--rounds`` rounds (the first cached one fills
the cache; the study's later evaluations, and every later trial's, find it filled). Prints seconds
per evaluation, the ratio, and the largest loss difference between the two.
"""

from __future__ import annotations

import argparse
import statistics
import time

import medlora  # noqa: F401  (first: the fast BLAS before mlx)
import mlx.core as mx
import mlx.nn as nn
from mlx_lm.tuner.trainer import evaluate

from medlora.config import load_run_config
from medlora.data import splits
from medlora.models import load as models
from medlora.training import frozen_prefix
from medlora.training.batches import batch_iterator, load_datasets
from medlora.training.loss import training_loss
from medlora.training.run import add_lora


def one_evaluation(cfg, model, valid, cache: bool) -> tuple[float, float]:
    loss, _, extend_eval = training_loss(cfg.train, model, cache_prefix=cache)
    start = time.perf_counter()
    value = evaluate(model, valid, loss=loss, batch_size=cfg.train.eval_batch_size, num_batches=-1,
                     max_seq_length=cfg.train.max_seq_length,
                     iterate_batches=batch_iterator(cfg.train.seed, cfg.train.eval_batch_size, None, extend_eval))
    return time.perf_counter() - start, float(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    for layers in args.layers:
        cfg = load_run_config(["train.val_examples=32", f"lora.num_layers={layers}", *args.overrides])
        model, tokenizer = models.load_model(cfg.model, cfg.paths.models)
        mx.random.seed(0)
        add_lora(model, cfg)
        model.update(nn.utils.tree_map(lambda p: p + 0.01 * mx.random.normal(p.shape), model.trainable_parameters()))
        model.eval()
        split_dir = splits.prepare_from_config(cfg.data, cfg.paths.processed)
        key = models.model_path(cfg.model, cfg.paths.models).rstrip("/").split("/")[-1]
        _, valid = load_datasets(cfg, split_dir, tokenizer, model_key=key)
        frozen_prefix.CACHE.clear()
        times = {False: [], True: []}
        values = {False: [], True: []}
        for _ in range(args.rounds):
            for cache in (False, True):
                seconds, value = one_evaluation(cfg, model, valid, cache)
                times[cache].append(seconds)
                values[cache].append(value)
        off, first, later = statistics.median(times[False]), times[True][0], statistics.median(times[True][1:])
        diff = max(abs(a - b) for a in values[False] for b in values[True])
        print(f"LoRA on the last {layers:2d} of {len(model.model.layers)} blocks: off {off:.2f} s, cached: first "
              f"{first:.2f} s, later {later:.2f} s per evaluation of {len(valid)} questions -> {off / later:.2f}x "
              f"faster; largest loss difference {diff:.2e}")


if __name__ == "__main__":
    main()
