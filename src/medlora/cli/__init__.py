"""medlora's command line: ``medlora <command> [key=value ...]``.

Each command composes the Hydra config (the workspace's ``conf/``, then the packaged
defaults) with the overrides given, checks it once, and calls one function of a stage
below (:mod:`medlora.cli.commands`; the parser and its examples: :mod:`medlora.cli.parser`).
User mistakes print one line and exit with code 2.
"""

from __future__ import annotations

import sys

import medlora  # noqa: F401  (loads the optimized BLAS before anything imports mlx)
from medlora.cli.commands import HANDLERS, cmd_init
from medlora.cli.parser import build_parser
from medlora.config.shorthands import shorthand_overrides


def main(argv: list[str] | None = None) -> int:
    from medlora import stopping

    stopping.install()  # SIGTERM as Ctrl-C: runs end KILLED and the study can resume
    from medlora.config import compose, to_run_config
    from medlora.config.secrets import mask
    from medlora.errors import UserError
    from medlora.files import check_can_create, remove_orphaned_temp_dirs

    args = build_parser().parse_args(argv)
    remove_orphaned_temp_dirs()  # left by a medlora process that was killed
    try:
        if args.command == "init":
            cmd_init(args)
            return 0
        if getattr(args, "from_file", None):
            from medlora.study.report import overrides_from_file

            args.overrides = overrides_from_file(args.from_file) + list(args.overrides)
        args.overrides = list(args.overrides) + shorthand_overrides(args.command, vars(args))
        composed = compose(args.overrides)
        if args.cfg:
            from omegaconf import OmegaConf

            print(mask(OmegaConf.to_yaml(composed)))
            return 0
        cfg = to_run_config(composed)
        for key in ("mlruns", "experiments", "processed", "models"):  # before anything is written
            check_can_create(getattr(cfg.paths, key), f"paths.{key}")
        HANDLERS[args.command](cfg, composed, args)
    except UserError as err:
        print(f"medlora: error: {mask(str(err))}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        again = mask(" ".join(["medlora", args.command, *getattr(args, "overrides", [])]))
        hint = f"resume with: {again}" if args.command == "sweep" else f"rerun with: {again}"
        print(f"medlora: interrupted; the current run is marked KILLED ({hint})", file=sys.stderr)
        return 130
    return 0
