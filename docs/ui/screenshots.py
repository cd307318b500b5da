"""The README's screenshots of the MLflow UI: a small study of the real model, two promotes, `medlora ui`, Chromium.

    .venv/bin/python docs/ui/screenshots.py [--workspace DIR] [--out docs/ui]

The study (written as conf/study/readme.yaml in a fresh workspace) runs 5 short trials of the embedded
SmolLM2-135M (batch 1, 2 or 16 under a 2 GB cap, 10-30 steps): ~6 minutes on a 2-core CPU. It is promoted
after 3 trials and again after 5. Then `medlora ui` serves it and headless Chromium saves the runs table,
the study run, the best trial's samples.html and the champion's registry page as 256-colour PNGs. The
MLflow Assistant panel, which MLflow opens on a browser's first visit, is closed first, as a user would.
Needs Chromium (Debian: apt-get install chromium).
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "ui"))

from chromium import Browser  # noqa: E402
from uiproc import free_port, start_ui  # noqa: E402

STUDY = """\
defaults:
  - default
  - _self_
name: readme
n_trials: 3
timeout_minutes: 40
memory_cap_gb: 2.0
enqueue_baseline: false
sampler: {name: tpe, seed: 1, n_startup_trials: 4}
pruner: {name: median, n_startup_trials: 1, n_warmup_steps: 5, n_min_trials: 1}
search_space:
  train:
    batch_size: {type: categorical, choices: [1, 2, 16]}
    learning_rate: {type: float, low: 2e-4, high: 2e-3, log: true}
    iters: {type: int, low: 10, high: 30, step: 10}
  lora:
    num_layers: {type: int, low: 2, high: 8, step: 2}
trial_overrides:
  train.steps_per_eval: 10
  train.steps_per_report: 5
  train.val_examples: 8
  train.max_seq_length: 128
  probes.max_tokens: 48
"""


def medlora(workspace: Path, *args: str) -> None:
    subprocess.run([sys.executable, "-m", "medlora.cli", *args], cwd=workspace, check=True)


def shoot(base: str, out: Path) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=base, registry_uri=base)
    experiment = client.get_experiment_by_name("readme")
    runs = client.search_runs([experiment.experiment_id])
    parent = next(r for r in runs if r.data.tags.get("role") == "study")
    best = next(r for r in runs if r.data.tags.get("role") == "best trial")
    champion = client.get_model_version_by_alias("medlora-smollm2_135m", "champion")
    pages = {
        "study-runs.png": (f"/#/experiments/{experiment.experiment_id}/runs?workflowType=machine_learning"
                           "&viewStateShareKey=medlora", "best trial"),
        "study-run.png": (f"/#/experiments/{experiment.experiment_id}/runs/{parent.info.run_id}"
                          "?workflowType=machine_learning", "Best trial:"),
        "trial-samples.png": (f"/#/experiments/{experiment.experiment_id}/runs/{best.info.run_id}/artifacts/"
                              "samples.html?workflowType=machine_learning", "samples.html"),
        "registry-version.png": (f"/#/models/medlora-smollm2_135m/versions/{champion.version}"
                                 "?workflowType=machine_learning", "Source Run"),
    }
    from PIL import Image

    with Browser(width=1600, height=900) as browser:
        for name, (path, needle) in pages.items():
            browser.goto(base + path)
            assert browser.wait_for_text(needle, timeout=90), (name, browser.text()[:2000])
            browser.click('[aria-label="Close"]')  # the Assistant panel
            if name == "study-run.png":
                browser.click_text("Show more")
            time.sleep(3)  # charts and iframes settle
            browser.screenshot(out / name)
            Image.open(out / name).convert("RGB").quantize(256).save(out / name, optimize=True)
            print(f"{out / name}: {(out / name).stat().st_size // 1024} KB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workspace", type=Path, help="reuse this workspace (its study, if swept, is kept)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "ui")
    args = parser.parse_args()
    workspace = args.workspace or Path(tempfile.mkdtemp(prefix="medlora-readme-"))
    workspace.mkdir(parents=True, exist_ok=True)
    if not (workspace / "mlruns" / "mlflow.db").exists():
        medlora(workspace, "init", str(workspace))
        (workspace / "conf" / "study" / "readme.yaml").write_text(STUDY)
        medlora(workspace, "sweep", "study=readme")
        medlora(workspace, "promote", "study=readme")
        # a resumed study's seeded sampler starts its random draws over: another seed gives new trials
        medlora(workspace, "sweep", "study=readme", "study.n_trials=5", "study.sampler.seed=7")
        medlora(workspace, "promote", "study=readme")
    port = free_port()
    proc, lines = start_ui(workspace, port, "study=readme")
    print("\n".join(lines))
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        shoot(f"http://127.0.0.1:{port}", args.out)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    print(f"workspace kept: {workspace}")


if __name__ == "__main__":
    main()
