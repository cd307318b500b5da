"""The ``medlora`` argument parser: every command, its flags, and the examples its ``--help`` teaches."""

from __future__ import annotations

import argparse

from medlora.config.shorthands import SHORTHANDS

EPILOG = """\
overrides are Hydra's key=value syntax, over the config groups (`medlora train --cfg` shows them all):
  model=smollm2_135m|tiny_random|gemma_2b_quantized   lora.rank=16  lora.num_layers=8
  train.batch_size=4  train.iters=200  train.learning_rate=2e-4  train.max_seq_length=256
  data.csv=my_pairs.csv  paths.mlruns=other/mlruns  experiment=seed_baseline|quick

examples:
  medlora init my-work && cd my-work       # a workspace: your configs in conf/, outputs beside them
  medlora prepare                          # clean + split data/medquad.csv.gz
  medlora train                            # one LoRA run of the embedded SmolLM2-135M
  medlora train experiment=seed_baseline   # the original hand-picked settings
  medlora train experiment=quick           # a one-minute smoke run on a tiny random model
  medlora sweep                            # the default study: Optuna search under a memory cap
  medlora sweep study.name=big study.memory_cap_gb=4 study.timeout_minutes=120
  medlora sweep study.name=long study.fidelity.max_examples=1024  # rungs at 64, 256, 1024 examples
  medlora sweep study.name=byanswers study.objective=similarity  # champion by its answers, not validation loss
  medlora report study.name=default        # regenerate trials.csv, best.yaml, figures/ from storage
  medlora train --from experiments/default/best.yaml   # rerun the best trial
  medlora promote study.name=default       # best adapter -> registry, alias champion
  medlora promote --rollback               # champion <-> previous
  medlora promote --run <run id>           # one `medlora train` run's best adapter -> champion
  medlora ask "What is glaucoma?"          # base model + champion adapter, with NIH sources
  medlora ask "What is glaucoma?" ask.rag=true   # retrieved NIH answers given as context
  medlora evaluate                         # test split: base vs champion vs retrieval vs RAG
  medlora evaluate evaluate.questions=20 evaluate.rows=[base,adapter] evaluate.adapter=<run id>
  medlora evaluate evaluate.questions_set=consumer   # on messages as people write them (consumer set)
  medlora serve --port 8001                # OpenAI-compatible chat API for the champion (this machine only)
  medlora export                           # champion fused -> exports/<name>/ (mlx-lm folder + f16 GGUF), checked
  medlora ui --open study.name=default     # MLflow UI on the workspace's store, on the study's trials
  medlora train --cfg                      # print the composed config and exit

Runs are tracked in MLflow under the workspace's mlruns/ (sqlite:///mlruns/mlflow.db + mlruns/artifacts/).
The workspace is the nearest folder upwards holding .medlora (else the current folder).
"""

COMMANDS = {
    "init": "make a folder a workspace: conf/ with an example experiment and study to edit, data/, outputs",
    "prepare": "clean, dedupe and split the question/answer CSV into chat JSONL (train/valid/test)",
    "train": "one LoRA fine-tuning run, logged to MLflow (losses, samples, memory, adapters)",
    "sweep": "run (or resume) an Optuna study over conf/study: successive halving under a memory cap, then a verdict",
    "report": "regenerate a study's trials.csv, best.yaml and figures/ from its storage",
    "promote": "register a study's best adapter in MLflow and move alias 'champion' to it",
    "ask": "answer a question with the base model + the 'champion' adapter (after the safety triage)",
    "evaluate": "score base model, adapter, retrieval and RAG answers on held-out test questions",
    "serve": "serve the champion as an OpenAI-compatible chat API (triage, notice and sources included)",
    "export": "fuse the champion into a standalone mlx-lm model folder and a GGUF file, checked by loading back",
    "ui": "start the MLflow UI on the workspace's store and print the link to the study's trials",
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
        if name == "init":
            p.add_argument("folder", nargs="?", default=".", help="the folder to make a workspace (default: here)")
            continue
        if name == "ask":
            p.add_argument("question", help="the question, quoted")
        p.add_argument("overrides", nargs="*", metavar="key=value", help="Hydra config overrides")
        p.add_argument("--cfg", action="store_true", help="print the composed config and exit")
        if name == "train":
            p.add_argument("--from", dest="from_file", metavar="FILE",
                           help="a best.yaml written by a study: its overrides come first")
        if name == "promote":
            p.add_argument("--rollback", action="store_true", help="swap aliases champion and previous")
            p.add_argument("--run", metavar="RUN_ID", help="promote this training run's best adapter, not a study's best")
        for flag, key, metavar, help_text in SHORTHANDS.get(name, []):
            p.add_argument(flag, dest=flag[2:], metavar=metavar, help=f"{help_text} ({key}=...)")
        if name == "serve":
            p.add_argument("--log-questions", action="store_true", help="log the question text (serve.log_questions=true)")
        if name == "ui":
            p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this "
                           "machine only; 0.0.0.0: every interface)")
            p.add_argument("--port", default="5000", help="port to listen on (default 5000)")
            p.add_argument("--open", action="store_true", help="open the link in the default web browser")
    return parser
