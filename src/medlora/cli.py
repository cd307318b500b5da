"""medlora's command line: ``medlora <command> [key=value ...]``.

Each command composes the Hydra config (the workspace's ``conf/``, then the packaged
defaults) with the overrides given, checks it once, and calls one function of a stage
below. User mistakes print one line and exit with code 2.
"""

from __future__ import annotations

import argparse
import sys

import medlora  # noqa: F401  (loads the optimized BLAS before anything imports mlx)

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
  medlora sweep study.name=big study.memory_cap_gb=4 study.n_trials=30
  medlora report study.name=default        # regenerate trials.csv, best.yaml, figures/ from storage
  medlora train --from experiments/default/best.yaml   # rerun the best trial
  medlora promote study.name=default       # best adapter -> registry, alias champion
  medlora promote --rollback               # champion <-> previous
  medlora ask "What is glaucoma?"          # base model + champion adapter, with NIH sources
  medlora ask "What is glaucoma?" ask.rag=true   # retrieved NIH answers given as context
  medlora evaluate                         # test split: base vs champion vs retrieval vs RAG
  medlora evaluate evaluate.questions=20 evaluate.rows=[base,adapter] evaluate.adapter=<run id>
  medlora ui                               # MLflow UI on the project's store
  medlora train --cfg                      # print the composed config and exit

Runs are tracked in MLflow under the workspace's mlruns/ (sqlite:///mlruns/mlflow.db + mlruns/artifacts/).
The workspace is the nearest folder upwards holding .medlora (else the current folder).
"""

COMMANDS = {
    "init": "make a folder a workspace: conf/ with an example experiment and study to edit, data/, outputs",
    "prepare": "clean, dedupe and split the question/answer CSV into chat JSONL (train/valid/test)",
    "train": "one LoRA fine-tuning run, logged to MLflow (losses, samples, memory, adapters)",
    "sweep": "run (or resume) an Optuna study over conf/study: trials under a memory cap, pruned early",
    "report": "regenerate a study's trials.csv, best.yaml and figures/ from its storage",
    "promote": "register a study's best adapter in MLflow and move alias 'champion' to it",
    "ask": "answer a question with the base model + the 'champion' adapter (after the safety triage)",
    "evaluate": "score base model, adapter, retrieval and RAG answers on held-out test questions",
    "ui": "start the MLflow UI on the project's store",
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
        if name == "ui":
            p.add_argument("--port", type=int, default=5000)
    return parser


def overrides_from_file(path: str) -> list[str]:
    """The ``overrides`` list of a best.yaml."""
    from pathlib import Path

    import yaml

    from medlora.errors import UserError

    try:
        overrides = yaml.safe_load(Path(path).read_text())["overrides"]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as err:
        raise UserError(f"cannot read overrides from {path} ({type(err).__name__}) "
                        "(fix: pass a best.yaml written by `medlora sweep` or `medlora report`)") from None
    return [str(o) for o in overrides]


def cmd_init(args) -> None:
    from medlora.config.workspace import init

    written = init(args.folder)
    root = written[0].parent
    print(f"medlora: workspace ready in {root}: edit {', '.join(str(p.relative_to(root)) for p in written[1:])}")
    print(f"medlora: next: cd {root} && medlora train experiment=quick")


def cmd_prepare(cfg, composed, args) -> None:
    import json

    from medlora.data import splits

    split_dir = splits.prepare_from_config(cfg.data, cfg.paths.processed)
    counts = json.loads((split_dir / "manifest.json").read_text())["counts"]
    print(f"medlora: {counts}", file=sys.stderr)
    print(split_dir)


def cmd_train(cfg, composed, args) -> None:
    from medlora.training.run import train

    result = train(cfg)
    print(
        f"medlora: run {result.run_id} finished in {result.seconds:.0f}s: val loss {result.first_val_loss:.3f} "
        f"-> {result.final_val_loss:.3f} (best {result.best_val_loss:.3f} at iteration {result.best_iteration}), "
        f"{result.tokens_per_second:.0f} tokens/s, peak {result.peak_memory_gb:.2f} GB"
    )


def cmd_sweep(cfg, composed, args) -> None:
    from medlora.config import to_study_config
    from medlora.study.report import best_trial, trials_frame
    from medlora.study.search import run_study

    study_cfg = to_study_config(composed)
    study = run_study(study_cfg, cfg, list(args.overrides))
    frame = trials_frame(study)
    print(frame.drop(columns=["reason", "run_id"], errors="ignore").to_string(index=False))
    best = best_trial(study)
    where = study_cfg.dir
    print(f"medlora: study {study_cfg.name}: {len(frame)} trials; outputs in {where}/ (trials.csv, best.yaml, figures/)")
    if best is not None:
        print(f"medlora: best trial #{best.number}: val loss {best.value:.4f} {best.params}")
        print(f"medlora: next: medlora promote study.name={study_cfg.name}")


def cmd_report(cfg, composed, args) -> None:
    from medlora.config import to_study_config
    from medlora.study.report import write_study_outputs
    from medlora.study.storage import existing_study

    study_cfg = to_study_config(composed)
    out = write_study_outputs(existing_study(study_cfg), study_cfg)
    print(f"medlora: {len(out['trials'])} trials -> {study_cfg.dir}/ (trials.csv, best.yaml, figures/)")


def cmd_promote(cfg, composed, args) -> None:
    from medlora.config import to_study_config
    from medlora.registry import promote
    from medlora.registry.names import registered_name

    name = registered_name(cfg)
    if args.rollback:
        now, before = promote.rollback(cfg)
        print(f"medlora: {name}: champion is version {now.version} again"
              + (f" (version {before.version} is now 'previous')" if before else ""))
        return
    version, old = promote.promote(to_study_config(composed), cfg)
    print(f"medlora: {name} version {version.version} is now 'champion'"
          + (f"; version {old.version} is 'previous' (undo: medlora promote --rollback)" if old else ""))


def cmd_ask(cfg, composed, args) -> None:
    from medlora.answers.ask import ask

    for piece in ask(cfg, args.question):
        print(piece, end="", flush=True)


def cmd_evaluate(cfg, composed, args) -> None:
    from medlora.answers.evaluate import evaluate

    table, out, md = evaluate(cfg)
    print(md)
    print(f"medlora: evaluation written to {out} and MLflow (medlora ui)")


def cmd_ui(cfg, composed, args) -> None:
    import subprocess

    uri = cfg.paths.tracking_uri
    print(f"medlora: MLflow UI on http://127.0.0.1:{args.port} (store {uri}); Ctrl-C stops it")
    subprocess.run([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
                    "--registry-store-uri", uri, "--port", str(args.port)], check=False)


HANDLERS = {"prepare": cmd_prepare, "train": cmd_train, "sweep": cmd_sweep, "report": cmd_report,
            "promote": cmd_promote, "ask": cmd_ask, "evaluate": cmd_evaluate, "ui": cmd_ui}


def _stop_on_sigterm(signum, frame):
    raise KeyboardInterrupt  # runs end KILLED and the study can resume, exactly as with Ctrl-C


def main(argv: list[str] | None = None) -> int:
    import signal

    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    from medlora.config import compose, to_run_config
    from medlora.errors import UserError

    args = build_parser().parse_args(argv)
    try:
        if args.command == "init":
            cmd_init(args)
            return 0
        if getattr(args, "from_file", None):
            args.overrides = overrides_from_file(args.from_file) + list(args.overrides)
        composed = compose(args.overrides)
        if args.cfg:
            from omegaconf import OmegaConf

            print(OmegaConf.to_yaml(composed))
            return 0
        HANDLERS[args.command](to_run_config(composed), composed, args)
    except UserError as err:
        print(f"medlora: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        again = " ".join(["medlora", args.command, *args.overrides])
        hint = f"resume with: {again}" if args.command == "sweep" else f"rerun with: {again}"
        print(f"medlora: interrupted; the current run is marked KILLED ({hint})", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
