"""`medlora serve` latency and throughput: one request alone, then 4 at once, against in-process decoding.

Run from a workspace that has a champion (README "Using the champion"), e.g. the checkout:

    .venv/bin/python bench/serve_throughput.py                       # the champion of the default model
    .venv/bin/python bench/serve_throughput.py --max-tokens 64 -- --run <run id>   # args after -- go to serve

In one invocation, on the same model, questions and decoding settings (``generation.*``):

  (a) in-process: mlx-lm ``stream_generate`` of one question, no HTTP, no safety layer;
  (b) ``medlora serve`` (the real command, a subprocess), one streamed request at a time;
  (c) the same server, 4 streamed requests at once (decoded together in one batch).

Printed per phase: time to first token, latency, generated tokens per second; then the ratios
b/a (what HTTP + triage + sources cost a single user) and c/b (what batching gives 4 users).
Answers end at the end-of-turn token or ``--max-tokens``; tokens/s counts what was generated.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

QUESTIONS = ["What are the symptoms of gout?", "What causes glaucoma?", "How to diagnose Parkinson's disease?",
             "What are the treatments for asthma?"]


def stream(url: str, question: str, max_tokens: int) -> dict:
    """One streamed chat completion: time to first token, latency, generated tokens."""
    body = {"messages": [{"role": "user", "content": question}], "stream": True, "max_tokens": max_tokens,
            "stream_options": {"include_usage": True}}
    request = urllib.request.Request(f"{url}/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    start, first, tokens = time.perf_counter(), None, 0
    with urllib.request.urlopen(request, timeout=600) as response:
        for raw in response:
            line = raw.decode().strip()
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            elif first is None and chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                first = time.perf_counter() - start
    return {"ttft": first or 0.0, "latency": time.perf_counter() - start, "tokens": tokens}


def concurrent(url: str, questions: list[str], max_tokens: int) -> tuple[list[dict], float]:
    results: list[dict] = [{}] * len(questions)

    def one(i: int) -> None:
        results[i] = stream(url, questions[i], max_tokens)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(questions))]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, time.perf_counter() - start


def in_process(serve_args: list[str], questions: list[str], max_tokens: int) -> list[dict]:
    """(a): the served adapter loaded here, decoded with mlx-lm alone, the same settings."""
    import medlora  # noqa: F401  (the optimized BLAS first)
    from mlx_lm.generate import stream_generate

    from medlora.config import load_run_config
    from medlora.config.compose import shorthand_overrides
    from medlora.models.generation import chat_prompt, decoding, stop_at_special_tokens
    from medlora.registry.champion import load_adapter

    flags = parse_serve_flags(serve_args)
    cfg = load_run_config([*flags["overrides"], *shorthand_overrides("serve", flags)])
    model, tokenizer, _ = load_adapter(cfg, cfg.serve.adapter)
    stop_at_special_tokens(tokenizer)
    out = []
    for question in questions:
        start, first, n = time.perf_counter(), None, 0
        for response in stream_generate(model, tokenizer, chat_prompt(tokenizer, question, cfg.data.system_prompt),
                                        max_tokens=max_tokens, **decoding(cfg.generation, tokenizer)):
            first = first or time.perf_counter() - start
            n = response.generation_tokens
        out.append({"ttft": first, "latency": time.perf_counter() - start, "tokens": n})
    return out


def parse_serve_flags(args: list[str]) -> dict:
    parser = argparse.ArgumentParser()
    for flag in ("--version", "--run", "--host", "--port"):
        parser.add_argument(flag)
    parser.add_argument("overrides", nargs="*")
    return vars(parser.parse_args(args))


def summary(name: str, rows: list[dict], wall: float | None = None) -> float:
    tokens = sum(r["tokens"] for r in rows)
    wall = wall if wall is not None else sum(r["latency"] for r in rows)
    rate = tokens / wall
    print(f"{name:<34} ttft {statistics.mean(r['ttft'] for r in rows):5.2f} s   latency "
          f"{statistics.mean(r['latency'] for r in rows):6.2f} s   {tokens:4d} tokens   {rate:6.1f} tokens/s")
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("serve_args", nargs="*", help="after --: flags and overrides for `medlora serve`")
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    server = subprocess.Popen([sys.executable, "-m", "medlora.cli", "serve", "--port", "0", *args.serve_args],
                              stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        banner = server.stderr.readline()
        if " at http" not in banner:
            sys.exit(f"medlora serve did not start: {banner}{server.stderr.read()[-2000:]}")
        url = banner.split(" at ")[1].split()[0]
        print(banner.strip())
        threading.Thread(target=server.stderr.read, daemon=True).start()  # the request log: drained, unread
        stream(url, QUESTIONS[0], 8)  # warm-up (excluded)
        single = [stream(url, q, args.max_tokens) for q in QUESTIONS]
        together, wall = concurrent(url, QUESTIONS, args.max_tokens)
    finally:
        os.killpg(server.pid, signal.SIGINT)
        server.wait(60)
    baseline = in_process(args.serve_args, QUESTIONS, args.max_tokens)
    print(f"{len(QUESTIONS)} questions, max_tokens {args.max_tokens}")
    a = summary("(a) in-process stream_generate", baseline)
    b = summary("(b) medlora serve, one at a time", single)
    c = summary("(c) medlora serve, 4 at once", together, wall)
    print(f"b/a {b / a:.2f}   c/b {c / b:.2f}   (c: wall {wall:.1f} s for all 4)")
    print(f"load average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
