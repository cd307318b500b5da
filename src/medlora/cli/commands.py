"""One function per ``medlora`` command: each calls one function of a stage and prints what the user needs.

Handlers take ``(cfg, composed, args)``: the checked run config, the composed Hydra tree (for the
study group) and the parsed arguments. Stages are imported inside each handler, so ``medlora --help``
and a mistyped command answer at once.
"""

from __future__ import annotations

import sys

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
    print(frame.drop(columns=["reason", "run_id"], errors="ignore").dropna(axis=1, how="all").to_string(index=False))
    best = best_trial(study, study_cfg.objective)
    where = study_cfg.dir
    waiting = int((frame["state"] == "WAITING").sum())
    queued = f" ({waiting} queued configurations not run yet: rerun the command to train them)" if waiting else ""
    print(f"medlora: study {study_cfg.name}: {len(frame) - waiting} trials{queued}; outputs in {where}/ "
          "(trials.csv, best.yaml, figures/)")
    if best is not None:
        scored = (f", answer similarity {best.user_attrs['answer_similarity']:.3f}"
                  if "answer_similarity" in best.user_attrs else "")
        print(f"medlora: best trial #{best.number} (by {study_cfg.objective}): val loss {best.value:.4f}{scored} "
              f"{best.params}")
        print(f"medlora: next: medlora promote study.name={study_cfg.name}")


def cmd_report(cfg, composed, args) -> None:
    from medlora.config import to_study_config
    from medlora.study.report import write_study_outputs
    from medlora.study.storage import existing_study

    study_cfg = to_study_config(composed)
    out = write_study_outputs(existing_study(study_cfg), study_cfg)
    print(f"medlora: {len(out['trials'])} trials -> {study_cfg.dir}/ (trials.csv, best.yaml, figures/)")


def cmd_promote(cfg, composed, args) -> None:
    from medlora.answers.mlflow_model import promote
    from medlora.config import to_study_config
    from medlora.registry.names import registered_name
    from medlora.registry.promote import rollback

    name = registered_name(cfg)
    if args.rollback:
        now, before = rollback(cfg)
        print(f"medlora: {name}: champion is version {now.version} again"
              + (f" (version {before.version} is now 'previous')" if before else ""))
        return
    version, old = promote(to_study_config(composed), cfg, args.run)
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


def cmd_serve(cfg, composed, args) -> None:
    import os

    from medlora.answers.serve import serve

    serve(cfg)  # returns once the server has stopped (Ctrl-C / SIGTERM) and its decoder is closed
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip the interpreter's teardown: MLX's C++ threads (the decoder's, the triage embedder's) abort in it
    # ("terminate called without an active exception", exit -6) in about 2 of 3 stops. Nothing is left to write.
    os._exit(0)


def cmd_export(cfg, composed, args) -> None:
    from medlora.registry.export import export

    print(export(cfg).summary())


def cmd_ui(cfg, composed, args) -> None:
    from medlora.config import to_study_config
    from medlora.ui import serve

    serve(cfg, to_study_config(composed), args.host, args.port, args.open)


HANDLERS = {"prepare": cmd_prepare, "train": cmd_train, "sweep": cmd_sweep, "report": cmd_report,
            "promote": cmd_promote, "ask": cmd_ask, "evaluate": cmd_evaluate, "serve": cmd_serve,
            "export": cmd_export, "ui": cmd_ui}
