"""medlora as an installed package: the built wheel works from any folder, outside this checkout.

The wheel is built from this checkout and installed, without its dependencies, into a fresh
virtual environment that borrows the test environment's dependencies (a ``.pth`` line: no
downloads, and this checkout's own medlora is not on that path). ``medlora init`` then makes a
workspace in an empty folder and a tiny training run writes only inside it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(argv: list, cwd: Path, **env) -> subprocess.CompletedProcess:
    done = subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, **env})
    assert done.returncode == 0, f"{argv} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The ``bin/`` folder of a fresh venv with the wheel of this checkout installed."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"  # a copy: building writes build/ and *.egg-info beside the sources
    outputs = {".git", ".venv", "mlruns", "experiments", "exports", "data", "build"}  # the checkout's own, not the package's
    shutil.copytree(ROOT, source, ignore=lambda folder, names: [
        n for n in names if n.endswith(".egg-info") or n == "__pycache__" or (Path(folder) == ROOT and n in outputs)])
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", tmp / "dist", source], cwd=tmp)
    wheel = next((tmp / "dist").glob("medlora-*.whl"))
    run([sys.executable, "-m", "venv", "--without-pip", tmp / "venv"], cwd=tmp)
    python = tmp / "venv" / "bin" / "python"
    run([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", wheel], cwd=tmp)
    site = run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp).stdout.strip()
    Path(site, "medlora_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python.parent


@pytest.mark.slow
def test_wheel_ships_configs_and_data_and_is_not_this_checkout(installed, tmp_path):
    code = ("import medlora, medlora.data.csv_input as c, medlora.config.workspace as w; "
            "from medlora.data.consumer import read_set; "
            "print(medlora.__file__); print(c.PACKAGED_CSV.stat().st_size); "
            "print(sorted(p.name for p in (w.PACKAGED_CONF / 'study').glob('*.yaml'))); print(len(read_set()))")
    out = run([installed / "python", "-c", code], cwd=tmp_path).stdout.splitlines()
    assert str(ROOT) not in out[0] and "site-packages" in out[0]
    assert int(out[1]) > 1_000_000  # MedQuAD inside the wheel
    assert "default.yaml" in out[2]
    assert int(out[3]) >= 160  # the consumer question set inside the wheel
    triage = ("import medlora; from medlora.answers.safety import triage; "
              "print(triage('i cant breathe').kind, triage('What is glaucoma?'))")
    assert run([installed / "python", "-c", triage], cwd=tmp_path).stdout.split() == ["emergency", "None"]


@pytest.mark.slow
def test_init_then_train_from_an_empty_folder(installed, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    init = run([installed / "medlora", "init", "work"], cwd=empty)
    assert "workspace ready" in init.stdout
    work = empty / "work"
    assert (work / ".medlora").is_file() and (work / "conf" / "experiment" / "my_experiment.yaml").is_file()
    # a sub-folder of the workspace is the workspace too; the workspace's own study is found first
    (work / "notes").mkdir()
    shown = run([installed / "medlora", "sweep", "study=my_study", "--cfg"], cwd=work / "notes").stdout
    assert "name: my_study" in shown and "memory_cap_gb: 4.0" in shown
    run([installed / "medlora", "train", "experiment=quick", "train.iters=4", "train.steps_per_eval=2",
         "train.steps_per_report=2", "probes.max_tokens=2"], cwd=work / "notes")
    assert (work / "mlruns" / "mlflow.db").is_file()
    assert any((work / "data" / "processed").iterdir()) and any((work / "data" / "models").iterdir())
    assert sorted(p.name for p in empty.iterdir()) == ["work"]  # nothing written outside the workspace
    assert not (work / "notes" / "mlruns").exists()
