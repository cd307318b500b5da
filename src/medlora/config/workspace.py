"""The workspace: the user's folder, holding what the user changes and what runs produce.

    <workspace>/
      .medlora        marks the folder (written by `medlora init`; the checkout has one)
      conf/           the user's configs: found before the packaged defaults (same group layout)
      data/           prepared splits (data/processed) and the converted-model cache (data/models)
      experiments/    study outputs
      mlruns/         the MLflow store

The workspace is ``$MEDLORA_WORKSPACE`` if set, else the nearest folder, from the current one
upwards, holding ``.medlora``, else the current folder. Relative paths in the config are
relative to it, so the command works from any sub-folder.
"""

from __future__ import annotations

import os
from pathlib import Path

from medlora.errors import UserError

MARKER = ".medlora"
PACKAGED_CONF = Path(__file__).resolve().parents[1] / "conf"

_EXPERIMENT = """\
# @package _global_
# An experiment holds only what differs from the defaults. Run it with:
#   medlora train experiment=my_experiment
# See every key and its default: medlora train --cfg
lora:
  rank: 16
train:
  iters: 200
  learning_rate: 1e-4
run_name: my_experiment
"""

_STUDY = """\
# A study of your own, starting from the packaged default study. Run it with:
#   medlora sweep study=my_study
# (the packaged default: medlora sweep --cfg, under `study:`)
defaults:
  - default
  - _self_
name: my_study
n_trials: 20
memory_cap_gb: 4.0
"""


def root() -> Path:
    """The workspace folder (see the module docstring)."""
    env = os.environ.get("MEDLORA_WORKSPACE")
    if env:
        return Path(env).expanduser().resolve()
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / MARKER).is_file():
            return folder
    return here


def conf_dir() -> Path | None:
    """The workspace's own config folder, if it has one."""
    conf = root() / "conf"
    return conf if conf.is_dir() else None


def resolve(path: Path | str) -> Path:
    """``path`` (``~`` expanded) made absolute against the workspace."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else root() / path


def init(folder: Path) -> list[Path]:
    """Make ``folder`` a workspace with example configs to edit; return the files written.

    Refuses a folder that is already a workspace, and never overwrites a file.
    """
    folder = Path(folder).expanduser().resolve()
    if (folder / MARKER).exists():
        raise UserError(f"{folder} is already a medlora workspace (fix: use it as it is, or pick another folder)")
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder} exists and is not a folder (fix: pick another path)")
    files = {
        MARKER: "# This folder is a medlora workspace: configs in conf/, outputs in data/, experiments/, mlruns/.\n",
        "conf/experiment/my_experiment.yaml": _EXPERIMENT,
        "conf/study/my_study.yaml": _STUDY,
    }
    clash = [name for name in files if (folder / name).exists()]
    if clash:
        raise UserError(f"{folder / clash[0]} exists already (fix: move it away, or pick another folder)")
    written = []
    try:
        for name, text in files.items():
            path = folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            written.append(path)
        for name in ("data", "experiments", "mlruns"):
            (folder / name).mkdir(exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create the workspace in {folder}: {err.strerror} "
                        "(fix: pick a folder you can write to)") from None
    return written
