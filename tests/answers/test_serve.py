"""`medlora serve` on the tiny model: OpenAI chat completions (plain and streamed), triage first, limits, logs.

The app is exercised through FastAPI's TestClient, and once through a real uvicorn server with
concurrent plain-HTTP clients (no OpenAI client is installed: the requests are what one sends).
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager

import pytest
from conftest import isolated_overrides
from fastapi.testclient import TestClient

from medlora.answers import safety
from medlora.answers.batching import Job
from medlora.answers.serve import build, listen
from medlora.answers.server_app import create_app
from medlora.config import load_run_config

QUESTION = "What are the treatments for leukemia?"
EMERGENCY = "I have crushing chest pain right now"


@pytest.fixture(scope="module")
def service(tmp_path_factory, model_cache, small_csv):
    from medlora.models.load import load_model
    from medlora.training.callbacks import save_adapter
    from medlora.training.lora import adapter_config, add_lora

    root = tmp_path_factory.mktemp("serve")
    overrides = isolated_overrides(root, model_cache, small_csv)
    cfg = load_run_config(overrides)
    model, _ = load_model(cfg.model, cfg.paths.models)
    save_adapter(model, root / "adapter", adapter_config(cfg, add_lora(model, cfg)))
    cfg = load_run_config([*overrides, f"serve.adapter={root / 'adapter'}", "generation.max_tokens=12",
                           "serve.max_tokens=64", "serve.max_prompt_tokens=200", "serve.max_concurrent=4"])
    built = build(cfg)
    yield built
    built.engine.close()


@pytest.fixture(scope="module")
def client(service):
    return TestClient(create_app(service))


def ask(question: str, **more) -> dict:
    return {"model": "anything", "messages": [{"role": "user", "content": question}], **more}


def events(response) -> list:
    """The JSON payloads of a server-sent event stream (``[DONE]`` kept as a string)."""
    lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines), lines
    return [line[6:] if line == "data: [DONE]" else json.loads(line[6:]) for line in lines]


def test_health_and_models_name_the_served_adapter(client, service):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["model"] == "medlora-tiny_random" and health["in_flight"] == 0
    assert health["adapter"] == "adapter"  # a folder's label is its name
    listed = client.get("/v1/models").json()
    assert [m["id"] for m in listed["data"]] == ["medlora-tiny_random"] and listed["object"] == "list"


def test_a_completion_carries_the_answer_the_notice_and_the_sources(client):
    body = client.post("/v1/chat/completions", json=ask(QUESTION, max_tokens=8)).json()
    choice, extra = body["choices"][0], body["medlora"]
    assert body["object"] == "chat.completion" and choice["message"]["role"] == "assistant"
    assert choice["finish_reason"] in ("stop", "length")
    assert 0 < body["usage"]["completion_tokens"] <= 8
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
    assert extra["triage"] is None and extra["notice"] == safety.DISCLAIMER
    assert extra["sources"] and all(url.startswith("http") for url in extra["sources"])
    content = choice["message"]["content"]  # serve.append_notice: the notice and sources end the text too
    generated, _, tail = content.partition(f"\n\n{safety.DISCLAIMER}\n")
    assert generated and tail == "Sources (related NIH pages):\n" + "".join(f"  - {u}\n" for u in extra["sources"])


def test_the_stream_spells_the_same_answer_as_the_plain_reply(client):
    plain = client.post("/v1/chat/completions", json=ask(QUESTION)).json()
    with client.stream("POST", "/v1/chat/completions",
                       json=ask(QUESTION, stream=True, stream_options={"include_usage": True})) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        chunks = events(response)
    assert chunks[-1] == "[DONE]"
    usage, final = chunks[-2], chunks[-3]
    assert usage["choices"] == [] and usage["usage"] == plain["usage"]
    assert final["choices"][0]["finish_reason"] == plain["choices"][0]["finish_reason"]
    assert final["medlora"] == plain["medlora"]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert len(chunks) > 5  # token by token, not one block
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-2])
    assert text == plain["choices"][0]["message"]["content"]  # greedy decoding: the same answer both ways
    assert {c["id"] for c in chunks[:-1]} == {chunks[0]["id"]}


@pytest.mark.parametrize("stream", [False, True])
def test_an_emergency_gets_the_triage_message_and_the_model_never_runs(client, service, monkeypatch, stream):
    monkeypatch.setattr(service.engine, "submit", lambda job: pytest.fail("the model was asked to answer"))
    for _ in range(service.slots.limit):  # even with every slot taken, the emergency is answered
        assert service.slots.take()
    try:
        response = client.post("/v1/chat/completions", json=ask(EMERGENCY, stream=stream))
    finally:
        for _ in range(service.slots.limit):
            service.slots.give()
    assert response.status_code == 200
    message = safety.triage(EMERGENCY).message
    if stream:
        chunks = events(response)
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-1])
        extra = chunks[-2]["medlora"]
    else:
        text, extra = response.json()["choices"][0]["message"]["content"], response.json()["medlora"]
    assert text == message and extra["triage"] == safety.triage(EMERGENCY).kind and extra["notice"] is None


def test_an_emergency_earlier_in_the_conversation_is_triaged_too(client):
    body = client.post("/v1/chat/completions", json={"messages": [
        {"role": "user", "content": EMERGENCY}, {"role": "assistant", "content": "..."},
        {"role": "user", "content": "what should I do?"}]}).json()
    assert body["choices"][0]["message"]["content"] == safety.triage(EMERGENCY).message


@pytest.mark.parametrize("request_body, status, code", [
    (ask(QUESTION, max_tokens=65), 400, "max_tokens_too_large"),
    (ask(QUESTION, max_completion_tokens=1000), 400, "max_tokens_too_large"),
    (ask("why " * 400), 400, "context_length_exceeded"),
    ({"messages": []}, 400, "invalid_request"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, 400, "invalid_request"),
    ({"messages": [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": "x"}]}, 400,
     "invalid_request"),
    (ask(QUESTION, n=2), 400, "invalid_request"),
    (ask(QUESTION, temperature=5), 400, "invalid_request"),
])
def test_requests_over_a_limit_or_malformed_get_a_clean_4xx(client, request_body, status, code):
    response = client.post("/v1/chat/completions", json=request_body)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code and error["message"] and error["type"] == "invalid_request_error"


def test_bodies_too_large_or_not_json_and_unknown_routes_get_clean_errors(client, service):
    big = client.post("/v1/chat/completions", content=b"{" + b" " * service.serve.max_request_bytes + b"}",
                      headers={"content-type": "application/json"})
    assert big.status_code == 413 and big.json()["error"]["code"] == "request_too_large"
    broken = client.post("/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert broken.status_code == 400 and "not valid JSON" in broken.json()["error"]["message"]
    assert client.get("/v1/nothing").status_code == 404 and "error" in client.get("/v1/nothing").json()


def test_a_full_server_answers_429_until_a_slot_frees(client, service):
    for _ in range(service.slots.limit):
        assert service.slots.take()
    try:
        busy = client.post("/v1/chat/completions", json=ask(QUESTION))
    finally:
        for _ in range(service.slots.limit):
            service.slots.give()
    assert busy.status_code == 429 and busy.headers["retry-after"] == "1"
    assert busy.json()["error"]["type"] == "rate_limit_error"
    assert client.post("/v1/chat/completions", json=ask(QUESTION, max_tokens=2)).status_code == 200


def test_requests_are_logged_with_timing_and_the_question_only_when_asked(client, service, caplog, monkeypatch):
    caplog.set_level("INFO", logger="medlora.serve")
    client.post("/v1/chat/completions", json=ask(QUESTION, max_tokens=3))
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("chat "))
    assert "total_ms=" in line and "completion_tokens=" in line and "first_token_ms=" in line
    assert "leukemia" not in caplog.text
    monkeypatch.setattr(service, "serve", service.serve.model_copy(update={"log_questions": True}))
    client.post("/v1/chat/completions", json=ask(QUESTION, max_tokens=3))
    assert f"question={QUESTION!r}" in caplog.text


def test_a_cancelled_request_stops_decoding_and_frees_its_slot(service):
    finished = threading.Event()
    result = {}

    def on_event(text, finish):
        if finish is None:
            job.cancelled = True  # as when the client goes away mid-answer
        else:
            result["finish"] = finish
            finished.set()

    prompt = service.answerer.prompt([{"role": "user", "content": QUESTION}])
    from mlx_lm.sample_utils import make_sampler

    job = service.engine.submit(Job(prompt, 60, make_sampler(temp=0.0), on_event))
    assert finished.wait(30)
    assert result["finish"] == "cancelled" and job.tokens < 60


@contextmanager
def served(service):
    """A real uvicorn server for ``service`` on a free port of 127.0.0.1; yields its base URL."""
    import uvicorn

    sock = listen("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(create_app(service), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def post(url: str, body: dict) -> dict:
    """What curl -d sends: a JSON POST; the reply's JSON (an HTTP error raises urllib's HTTPError)."""
    request = urllib.request.Request(f"{url}/v1/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def test_a_real_server_decodes_concurrent_requests_together_and_refuses_in_json(service):
    service.engine.peak = 0
    with served(service) as url:
        replies = [None] * 4

        def one(i: int) -> None:
            replies[i] = post(url, ask(QUESTION, max_tokens=40))

        clients = [threading.Thread(target=one, args=(i,)) for i in range(4)]
        for c in clients:
            c.start()
        for c in clients:
            c.join(60)
        assert all(r and r["usage"]["completion_tokens"] > 0 for r in replies)
        assert service.engine.peak > 1  # decoded in one batch, not one after the other
        with pytest.raises(urllib.error.HTTPError) as refused:
            post(url, ask(QUESTION, max_tokens=10_000))
        assert refused.value.code == 400 and json.loads(refused.value.read())["error"]["param"] == "max_tokens"


def test_a_taken_port_is_a_one_line_user_error():
    from medlora.errors import UserError

    sock = listen("127.0.0.1", 0)
    try:
        with pytest.raises(UserError, match="cannot listen on 127.0.0.1"):
            listen("127.0.0.1", sock.getsockname()[1])
    finally:
        sock.close()


def test_serve_help_names_the_flags(capsys):
    from medlora.cli import main

    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = capsys.readouterr().out
    assert all(flag in out for flag in ("--version", "--run", "--host", "--port", "--log-questions", "serve.host="))
