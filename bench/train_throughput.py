"""Training and evaluation throughput, side by side in one invocation:

  (a) plain `mlx_lm lora` as installed (the mlx wheel's reference BLAS)
  (b) plain `mlx_lm lora` with the optimized BLAS medlora loads (LD_PRELOAD of the same library)
  (c) `medlora train`

Same model (the converted embedded SmolLM2-135M), same prepared split (medlora's train/valid
JSONL, which mlx-lm reads directly), same LoRA settings, batch size, sequence length and
iterations; prompts are not masked in any of them, so every reported token is a non-padding
token the model processed. Each tool reports tokens/s through mlx-lm's trainer; evaluation time
is scaled to 100 examples. Utilisation compares trained-token FLOPs (forward through all blocks,
backward through the LoRA blocks) with a matmul peak measured here. Last line: the c/a ratio.

    .venv/bin/python bench/train_throughput.py [--iters 6] [--batch-size 2] [--num-layers 8]
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
    code = ("from medlora.blas import load_fast_blas; load_fast_blas()\nimport time, mlx.core as mx\n"
            "a=mx.random.normal((1024,1024)); b=mx.random.normal((1024,1024)); mx.eval(a@b)\n"
            "t=time.perf_counter()\nfor _ in range(20): mx.eval(a@b)\n"
            "print(2*1024**3*20/(time.perf_counter()-t)/1e9)")
    return float(run([sys.executable, "-c", code], dict(os.environ)).strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iters", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--num-layers", type=int, default=8)
    parser.add_argument("--max-seq-length", type=int, default=160)
    parser.add_argument("--val-examples", type=int, default=8)
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT / "src"))
    from medlora import blas, data, models
    from medlora.config import load_run_config

    cfg = load_run_config([])
    split_dir = data.prepare_from_config(cfg.data, cfg.paths.processed)
    model_dir = models.model_path(cfg.model, cfg.paths.models)
    openblas = next((p for p in blas.CANDIDATES if Path(p).exists()), None)
    val_batches = max(1, args.val_examples // args.batch_size)
    common = ["--batch-size", str(args.batch_size), "--iters", str(args.iters), "--num-layers",
              str(args.num_layers), "--max-seq-length", str(args.max_seq_length), "--steps-per-report", "1",
              "--steps-per-eval", str(args.iters)]
    base_env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        mlx_lm = [sys.executable, "-m", "mlx_lm", "lora", "--model", model_dir, "--train", "--data", str(split_dir),
                  "--val-batches", str(val_batches), "--adapter-path", tmp, *common]
        t = time.perf_counter()
        results["a"] = parse(run(mlx_lm, {**base_env, "MEDLORA_BLAS": "none"}))
        results["a"]["wall"] = time.perf_counter() - t
        t = time.perf_counter()
        results["b"] = parse(run(mlx_lm, {**base_env, "LD_PRELOAD": openblas or ""}))
        results["b"]["wall"] = time.perf_counter() - t
        medlora = [sys.executable, "-m", "medlora.cli", "train", f"train.batch_size={args.batch_size}",
                   f"train.iters={args.iters}", f"lora.num_layers={args.num_layers}",
                   f"train.max_seq_length={args.max_seq_length}", "train.steps_per_report=1",
                   f"train.steps_per_eval={args.iters}", f"train.val_examples={args.val_examples}",
                   f"train.eval_batch_size={args.batch_size}", "train.mask_prompt=false", "probes.max_tokens=1",
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
        eval_100 = r["eval_seconds"] * 100 / (val_batches * args.batch_size)
        util = r["tokens_per_second"] * gflop_per_token / peak
        print(f"({key}) {names[key]:<30} {r['tokens_per_second']:8.1f} train tokens/s | eval {eval_100:7.1f} s "
              f"per 100 examples | utilisation {util:6.1%} | {r['wall']:.0f} s wall")
    print(f"c/b = {results['c']['tokens_per_second'] / results['b']['tokens_per_second']:.2f}")
    print(f"c/a = {results['c']['tokens_per_second'] / results['a']['tokens_per_second']:.2f}")


if __name__ == "__main__":
    main()
