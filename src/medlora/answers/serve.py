"""``medlora serve``: the champion (or another adapter) behind an OpenAI-compatible HTTP server.

Loads base model + adapter (``serve.adapter``: champion, a version number, a run id, a folder),
builds the retrieval index, starts the decoding thread (:mod:`medlora.answers.batching`) and
runs the FastAPI app (:mod:`medlora.answers.server_app`) under uvicorn, on ``serve.host``
(127.0.0.1: this machine only) and ``serve.port``. Any OpenAI client works::

    medlora serve                 # then, e.g.:
    curl http://127.0.0.1:8000/v1/chat/completions -H 'Content-Type: application/json' \\
         -d '{"model": "medlora", "messages": [{"role": "user", "content": "What is glaucoma?"}]}'
"""

from __future__ import annotations

import logging
import socket
import sys

from medlora.answers.answerer import Answerer
from medlora.answers.batching import Engine
from medlora.answers.server_app import Service, create_app
from medlora.config import RunConfig
from medlora.errors import UserError
from medlora.models.generation import decoding
from medlora.registry.champion import load_adapter
from medlora.registry.names import registered_name


def build(cfg: RunConfig) -> Service:
    """Load the model named by ``serve.adapter`` and everything that serves it (no socket yet)."""
    model, tokenizer, label = load_adapter(cfg, cfg.serve.adapter)
    answerer = Answerer(cfg, model, tokenizer, label)
    answerer.warm_up()
    engine = Engine(model, tokenizer, logits_processors=decoding(cfg.generation, tokenizer)["logits_processors"],
                    max_batch=cfg.serve.max_concurrent)
    return Service(answerer, engine, cfg.serve, registered_name(cfg))


def listen(host: str, port: int) -> socket.socket:
    """A listening socket, or a UserError naming the address (taken, or not this machine's)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port} ({err.strerror}) "
                        "(fix: another --port, or stop what uses it)") from None
    sock.listen(128)
    return sock


def log_to_stderr() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s medlora.serve %(message)s"))
    logger = logging.getLogger("medlora.serve")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False


def serve(cfg: RunConfig) -> None:
    """Serve until Ctrl-C."""
    import uvicorn

    service = build(cfg)
    try:
        sock = listen(cfg.serve.host, cfg.serve.port)
    except UserError:
        service.engine.close()
        raise
    log_to_stderr()
    host, port = sock.getsockname()[:2]
    print(f"medlora: serving {service.model_id} ({service.answerer.label}) at http://{host}:{port}/v1 "
          f"(OpenAI chat completions; /health, /v1/models); Ctrl-C stops", file=sys.stderr, flush=True)
    if cfg.serve.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"medlora: listening on {cfg.serve.host}: anyone who can reach this machine can use it "
              "(no authentication)", file=sys.stderr)
    server = uvicorn.Server(uvicorn.Config(create_app(service), log_level="warning", access_log=False))
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn shuts down gracefully, then re-raises the Ctrl-C it caught
        print("medlora: server stopped", file=sys.stderr)
    finally:
        service.engine.close()
        sock.close()
