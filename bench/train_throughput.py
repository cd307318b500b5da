"""Training and evaluation throughput, side by side in one invocation:

  (a) plain `mlx_lm lora` as installed (the mlx wheel's reference BLAS)
  (b) plain `mlx_lm lora` with the optimized BLAS medlora loads (LD_PRELOAD of the same library)
  (c) `medlora train`

Same model (the converted embedded SmolLM2-135M), same prepared split (medlora's train/valid
JSONL, which mlx-lm reads directly), same LoRA settings, batch size, sequence length and
iterations, and the prompt masked from the loss in all three (`--mask-prompt`, medlora's
default). Tokens are the tokens each tool learns from, as mlx-lm's trainer counts them: the
answer tokens inside the loss mask (never padding, never the masked prompt), the same
definition for all three. tokens/s is the median of per-step reports after the first (which
includes compilation); evaluation is the validation pass's seconds scaled to 100 examples, and
for (c) also tokens/s over the same kind of tokens. Utilisation compares FLOPs per trained
token (forward through all blocks, backward through the LoRA blocks) with a matmul peak
measured here. Last line: the c/a ratio. (a) runs at a few tokens/s: keep --iters small.

    .venv/bin/python bench/train_throughput.py [--iters 3] [--batch-size 2] [--num-layers 8]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REPORT = re.compile(r"^\s*(\d+)\s+([\d.]+)\s+[▼▲]\s+([\d,]+)\s+([\d.]+)k\s*$")
VAL = re.compile(r"^\s*(\d+)\s+val\s+([\d.]+)\s+([\d.]+)s\s*$")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def parse(output: str) -> dict:
    """tokens/s (median of reports after the first, which includes compilation) and seconds per evaluation."""
    rates, vals = [], []
    for line in ANSI.sub("", output).splitlines():
        if m := REPORT.match(line):
            rates.append(float(m.group(3).replace(",", "")))
        elif m := VAL.match(line):
            vals.append(float(m.group(3)))
    rates = sorted(rates[1:]) or rates
    return {"tokens_per_second": rates[len(rates) // 2] if rates else float("nan"),
            "eval_seconds": min(vals[1:] or vals) if vals else float("nan")}


def run(cmd: list[str], env: dict) -> str:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return proc.stdout + proc.stderr


def matmul_peak_gflops() -> float:
    code = ("import medlora\nimport time, mlx.core as mx\n"
            "a=mx.random.normal((1024,1024)); b=mx.random.normal((1024,1024)); mx.eval(a@b)\n"
            "t=time.perf_counter()\nfor _ in range(20): mx.eval(a@b)\n"
            "print(2*1024**3*20/(time.perf_counter()-t)/1e9)")
    return float(run([sys.executable, "-c", code], dict(os.environ)).strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--num-layers", type=int, default=8)
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--val-examples", type=int, default=4)
    parser.add_argument("--skip-reference", action="store_true", help="skip (a), the slow reference-BLAS run")
    args = parser.parse_args()

    from medlora.config import load_run_config
    from medlora.data import splits as data
    from medlora.models import blas
    from medlora.models import load as models

    # mlx-lm cuts long examples mid-sentence: (c) does the same here, so all three see the same tokens
    cfg = load_run_config(["train.truncation=hard"])
    split_dir = data.prepare_from_config(cfg.data, cfg.paths.processed)
    model_dir = models.model_path(cfg.model, cfg.paths.models)
    openblas = next((p for p in blas.CANDIDATES if Path(p).exists()), None)
    val_batches = max(1, args.val_examples // args.batch_size)
    common = ["--batch-size", str(args.batch_size), "--iters", str(args.iters), "--num-layers",
              str(args.num_layers), "--max-seq-length", str(args.max_seq_length), "--steps-per-report", "1",
              "--mask-prompt",
              "--steps-per-eval", str(args.iters)]
    base_env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        mlx_lm = [sys.executable, "-m", "mlx_lm", "lora", "--model", model_dir, "--train", "--data", str(split_dir),
                  "--val-batches", str(val_batches), "--adapter-path", tmp, *common]
        if not args.skip_reference:
            t = time.perf_counter()
            results["a"] = parse(run(mlx_lm, {**base_env, "MEDLORA_BLAS": "none"}))
            results["a"]["wall"] = time.perf_counter() - t
        t = time.perf_counter()
        results["b"] = parse(run(mlx_lm, {**base_env, "LD_PRELOAD": openblas or ""}))
        results["b"]["wall"] = time.perf_counter() - t
        medlora = [sys.executable, "-m", "medlora", "train", f"train.batch_size={args.batch_size}",
                   f"train.iters={args.iters}", f"lora.num_layers={args.num_layers}",
                   f"train.max_seq_length={args.max_seq_length}", "train.truncation=hard", "train.steps_per_report=1",
                   f"train.steps_per_eval={args.iters}", f"train.val_examples={args.val_examples}",
                   "probes.max_tokens=1",
                   f"paths.mlruns={tmp}/mlruns", "run_name=bench"]
        t = time.perf_counter()
        results["c"] = parse(run(medlora, base_env))
        results["c"]["wall"] = time.perf_counter() - t

    peak = matmul_peak_gflops()
    blocks, params = 30, 134.5e6  # SmolLM2-135M
    gflop_per_token = 2 * params * (1 + 2 * args.num_layers / blocks) / 1e9
    names = {"a": "mlx_lm lora, reference BLAS", "b": "mlx_lm lora, optimized BLAS", "c": "medlora train"}
    print(f"model SmolLM2-135M | batch {args.batch_size} | max_seq_length {args.max_seq_length} | "
          f"{args.num_layers} LoRA layers | {args.iters} iterations | matmul peak {peak:.0f} GFLOP/s | "
          f"~{gflop_per_token:.2f} GFLOP per trained token")
    for key, r in results.items():
        examples = args.val_examples if key == "c" else val_batches * args.batch_size
        eval_100 = r["eval_seconds"] * 100 / examples
        util = r["tokens_per_second"] * gflop_per_token / peak
        print(f"({key}) {names[key]:<30} {r['tokens_per_second']:8.1f} train tokens/s | eval {eval_100:7.1f} s "
              f"per 100 examples | utilisation {util:6.1%} | {r['wall']:.0f} s wall")
    val_tokens = validation_tokens(cfg, split_dir, model_dir, args.val_examples)
    eval_rate = val_tokens / results["c"]["eval_seconds"]
    print(f"(c) evaluation: {eval_rate:.1f} tokens/s = {eval_rate / results['c']['tokens_per_second']:.2f}x its "
          f"training tokens/s ({val_tokens} answer tokens in {results['c']['eval_seconds']:.1f} s)")
    print(f"c/b = {results['c']['tokens_per_second'] / results['b']['tokens_per_second']:.2f}")
    if "a" in results:
        print(f"c/a = {results['c']['tokens_per_second'] / results['a']['tokens_per_second']:.2f}")


def validation_tokens(cfg, split_dir: Path, model_dir, val_examples: int) -> int:
    """Answer tokens in the validation subset medlora evaluates (its cached tokenization)."""
    from mlx_lm.utils import load_tokenizer

    from medlora.training.batches import load_datasets

    run_cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"val_examples": val_examples})})
    _, valid = load_datasets(run_cfg, split_dir, load_tokenizer(Path(model_dir)), model_key=Path(model_dir).name)
    return sum(len(tokens) - offset for tokens, offset in (valid[i] for i in range(len(valid))))


if __name__ == "__main__":
    main()
