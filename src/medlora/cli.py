"""medlora's command line: ``medlora <command> [key=value ...]``.

Each command composes the Hydra config in ``conf/`` with the overrides given,
validates it once, and calls one module function. User mistakes print one line
and exit with code 2.
"""

from __future__ import annotations

import argparse
import sys

from medlora.blas import load_fast_blas

EPILOG = """\
overrides are Hydra's key=value syntax, over the config groups in conf/:
  model=smollm2_135m|tiny_random|gemma_2b_quantized   lora.rank=16  lora.num_layers=8
  train.batch_size=4  train.iters=200  train.learning_rate=2e-4  train.max_seq_length=256
  data.csv=my_pairs.csv  paths.mlruns=/tmp/mlruns  experiment=seed_baseline|quick

examples:
  medlora prepare                          # clean + split data/medquad.csv.gz
  medlora train                            # one LoRA run of the embedded SmolLM2-135M
  medlora train experiment=seed_baseline   # the original hand-picked settings
  medlora train experiment=quick           # a one-minute smoke run on a tiny random model
  medlora train --cfg                      # print the composed config and exit

Runs are tracked in MLflow under mlruns/ (browse with: mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db).
"""

COMMANDS = {
    "prepare": "clean, dedupe and split the question/answer CSV into chat JSONL (train/valid/test)",
    "train": "one LoRA fine-tuning run, logged to MLflow (losses, samples, memory, adapters)",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medlora",
        description="Fine-tune small language models to answer medical questions (MLX-LoRA, Optuna, MLflow).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text, epilog=EPILOG,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("overrides", nargs="*", metavar="key=value", help="Hydra config overrides")
        p.add_argument("--cfg", action="store_true", help="print the composed config and exit")
    return parser


def cmd_prepare(cfg) -> None:
    from medlora import data

    split_dir = data.prepare_from_config(cfg.data, cfg.paths.processed)
    print(split_dir)


def cmd_train(cfg) -> None:
    from medlora.train import train

    result = train(cfg)
    print(
        f"medlora: run {result.run_id} finished in {result.seconds:.0f}s: val loss {result.first_val_loss:.3f} "
        f"-> {result.final_val_loss:.3f} (best {result.best_val_loss:.3f} at iteration {result.best_iteration}), "
        f"{result.tokens_per_second:.0f} tokens/s, peak {result.peak_memory_gb:.2f} GB"
    )


HANDLERS = {"prepare": cmd_prepare, "train": cmd_train}


def main(argv: list[str] | None = None) -> int:
    load_fast_blas()  # must precede any import of mlx
    from medlora.config import compose, to_run_config
    from medlora.errors import UserError

    args = build_parser().parse_args(argv)
    try:
        composed = compose(args.overrides)
        if args.cfg:
            from omegaconf import OmegaConf

            print(OmegaConf.to_yaml(composed))
            return 0
        HANDLERS[args.command](to_run_config(composed))
    except UserError as err:
        print(f"medlora: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("medlora: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
