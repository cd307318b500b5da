"""LoRA training tokens/s with the optimized BLAS medlora loads vs the reference BLAS of the mlx wheel.

    .venv/bin/python bench/blas_speedup.py [--steps 4] [--batch-size 2] [key=value ...]

Each setting runs in its own process (the BLAS is chosen before mlx is imported),
one after the other in this one invocation, on the same model, data, LoRA settings,
batch size and steps, through mlx-lm's trainer. Tokens/s counts the answer tokens
the loss sees, as mlx-lm reports it. The last line is the speed-up ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

WORKER = r"""
import json, sys, time
import medlora  # loads the BLAS that MEDLORA_BLAS names, before mlx
from medlora.models.blas import blas_in_use
blas = blas_in_use()
import mlx.core as mx, mlx.optimizers as optim
from mlx_lm.tuner.callbacks import TrainingCallback
from mlx_lm.tuner.trainer import TrainingArgs, train
from medlora.config import load_run_config
from medlora.data import splits as data
from medlora.models import load as models
from medlora.training.batches import batch_iterator, load_datasets
from medlora.training.lora import add_lora

steps, batch_size, overrides = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
cfg = load_run_config([f"train.batch_size={batch_size}", *overrides])
model, tokenizer = models.load_model(cfg.model, cfg.paths.models)
mx.random.seed(0)
add_lora(model, cfg)
ref = models.model_path(cfg.model, cfg.paths.models)
split_dir = data.prepare_from_config(cfg.data, cfg.paths.processed)
train_set, _ = load_datasets(cfg, split_dir, tokenizer, model_key=ref.rstrip("/").split("/")[-1])
reports = []
class Keep(TrainingCallback):
    def on_train_loss_report(self, info): reports.append(info)
args = TrainingArgs(batch_size=batch_size, iters=steps + 1, steps_per_report=1, steps_per_eval=10**9,
                    steps_per_save=10**9, max_seq_length=cfg.train.max_seq_length, adapter_file="/dev/null")
try:
    train(model, optim.Adam(learning_rate=1e-5), train_set, None, args=args,
          iterate_batches=batch_iterator(0, 8), training_callback=Keep())
except Exception:
    pass  # the final adapter save to /dev/null may fail; the reports are in
measured = reports[1:]  # the first step includes compilation
tokens = sum(r["tokens_per_second"] * (1 / r["iterations_per_second"]) for r in measured)
seconds = sum(1 / r["iterations_per_second"] for r in measured)
print(json.dumps({"blas": blas, "tokens_per_second": tokens / seconds, "seconds": seconds}))
"""


def run(blas: str, steps: int, batch_size: int, overrides: list[str]) -> dict:
    env = {**os.environ, "MEDLORA_BLAS": blas}
    proc = subprocess.run([sys.executable, "-c", WORKER, str(steps), str(batch_size), *overrides],
                          env=env, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("overrides", nargs="*")
    a = parser.parse_args()
    fast = run("auto", a.steps, a.batch_size, a.overrides)
    slow = run("none", a.steps, a.batch_size, a.overrides)
    for r in (fast, slow):
        print(f"{r['blas']:<70} {r['tokens_per_second']:8.1f} tokens/s  ({r['seconds']:.1f} s measured)")
    print(f"optimized / reference BLAS training tokens/s: {fast['tokens_per_second'] / slow['tokens_per_second']:.1f}x")


if __name__ == "__main__":
    main()
