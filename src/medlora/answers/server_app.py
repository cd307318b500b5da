"""The FastAPI app of ``medlora serve``: OpenAI-compatible routes with medlora's safety layer in front.

    GET  /health                 status, model, adapter, requests in flight
    GET  /v1/models              the one model served
    POST /v1/chat/completions    chat completion, streamed (server-sent events) or not

Every user message is triaged first: a red flag gets its fixed message (``finish_reason: stop``,
``medlora.triage`` set) and the model never runs, whatever the limits. Otherwise the limits apply
(``serve.max_tokens`` -> 400, ``serve.max_prompt_tokens`` -> 400, ``serve.max_concurrent`` -> 429,
``serve.max_request_bytes`` -> 413; OpenAI-style error bodies), the model answers, and the notice
and sources go in ``medlora`` and, with ``serve.append_notice``, at the end of the text.
Each request is logged with its timing; the question text only with ``serve.log_questions``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException

from medlora.answers.answerer import Answerer, first_red_flag, footer
from medlora.answers.batching import Engine, Job
from medlora.answers.openai_api import ApiError, ChatRequest, Completion, sse, usage, validation_message
from medlora.answers.safety import DISCLAIMER
from medlora.config import ServeConfig

log = logging.getLogger("medlora.serve")


class Slots:
    """Requests being answered, at most ``limit`` at once (thread-safe: the decoder thread frees them)."""

    def __init__(self, limit: int):
        self.limit, self.used, self._lock = limit, 0, threading.Lock()

    def take(self) -> bool:
        with self._lock:
            if self.used >= self.limit:
                return False
            self.used += 1
            return True

    def give(self) -> None:
        with self._lock:
            self.used -= 1


class Service:
    """What the routes share: the answerer, the decoding engine, the limits, the model's id."""

    def __init__(self, answerer: Answerer, engine: Engine, serve: ServeConfig, model_id: str):
        self.answerer, self.engine, self.serve, self.model_id = answerer, engine, serve, model_id
        self.slots = Slots(serve.max_concurrent)

    def options(self, req: ChatRequest) -> tuple[int, object]:
        """(max_tokens, sampler) for ``req``; a request over the limit is refused."""
        from medlora.models.generation import sampler

        gen = self.answerer.cfg.generation
        max_tokens = req.max_completion_tokens or req.max_tokens or min(gen.max_tokens, self.serve.max_tokens)
        if max_tokens > self.serve.max_tokens:
            raise ApiError(400, f"max_tokens={max_tokens} is over this server's limit of {self.serve.max_tokens} "
                           f"(fix: ask for at most {self.serve.max_tokens})", code="max_tokens_too_large",
                           param="max_tokens")
        return max_tokens, sampler(gen, self.answerer.tokenizer, temperature=req.temperature, top_p=req.top_p)

    def log_line(self, done: Completion, req: ChatRequest, started: float, **fields) -> None:
        took = time.perf_counter() - started
        tokens = fields.get("completion_tokens", 0)
        fields.update(total_ms=round(1000 * took), stream=req.stream)
        if tokens:
            fields["tokens_per_s"] = round(tokens / took, 1)
        if self.serve.log_questions:
            fields["question"] = (req.user_texts() or [""])[-1]
        log.info("chat %s %s", done.id[-12:], " ".join(f"{k}={v!r}" if k == "question" else f"{k}={v}"
                                                       for k, v in fields.items()))


def create_app(service: Service) -> FastAPI:
    app = FastAPI(title="medlora", summary="OpenAI-compatible chat completions with medlora's safety layer")

    @app.middleware("http")
    async def limit_and_log(request: Request, call_next):
        started = time.perf_counter()
        size = request.headers.get("content-length", "0")
        if not size.isdigit() or int(size) > service.serve.max_request_bytes:
            err = ApiError(413, f"request body of {size} bytes is over this server's limit of "
                           f"{service.serve.max_request_bytes} (fix: send a shorter conversation)",
                           code="request_too_large")
            response = JSONResponse(err.body(), status_code=err.status)
        else:
            response = await call_next(request)
        log.info("%s %s %d %.0f ms", request.method, request.url.path, response.status_code,
                 1000 * (time.perf_counter() - started))
        return response

    @app.exception_handler(ApiError)
    async def api_error(request: Request, err: ApiError):
        return JSONResponse(err.body(), status_code=err.status, headers={"Retry-After": "1"} if err.status == 429 else None)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError):
        message, param = validation_message(err.errors())
        return JSONResponse(ApiError(400, message, code="invalid_request", param=param).body(), status_code=400)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException):
        return JSONResponse(ApiError(err.status_code, str(err.detail), code=str(err.status_code)).body(),
                            status_code=err.status_code)

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": service.model_id, "adapter": service.answerer.label,
                "in_flight": service.slots.used, "max_concurrent": service.slots.limit,
                "peak_batch": service.engine.peak}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": service.model_id, "object": "model", "created": 0,
                                            "owned_by": "medlora", "medlora": {"adapter": service.answerer.label}}]}

    @app.post("/v1/chat/completions")
    async def chat(req: ChatRequest):
        return await chat_completion(service, req)

    return app


async def chat_completion(service: Service, req: ChatRequest):
    started, done = time.perf_counter(), Completion(service.model_id)
    flag = first_red_flag(req.user_texts())
    if flag is not None:  # before every limit: an emergency always gets its message, and no model runs
        service.log_line(done, req, started, status=200, triage=flag.kind)
        return triage_reply(service, done, req, flag)
    if req.messages[-1].role != "user":
        raise ApiError(400, "the last message must be the user's question (fix: end messages with a user message)",
                       code="invalid_request", param="messages")
    max_tokens, sampler = service.options(req)
    prompt = await run_in_threadpool(service.answerer.prompt, req.conversation())
    if len(prompt) > service.serve.max_prompt_tokens:
        raise ApiError(400, f"the conversation is {len(prompt)} tokens, over this server's limit of "
                       f"{service.serve.max_prompt_tokens} (fix: send a shorter conversation)",
                       code="context_length_exceeded", param="messages")
    if not service.slots.take():
        raise ApiError(429, f"{service.slots.limit} requests are being answered, this server's limit "
                       "(fix: retry in a moment)", code="too_many_requests", kind="rate_limit_error")
    events: asyncio.Queue = asyncio.Queue()
    loop = asyncio.get_running_loop()

    def on_event(text: str, finish: str | None) -> None:
        if finish is not None:
            service.slots.give()
        loop.call_soon_threadsafe(events.put_nowait, (text, finish))

    job = service.engine.submit(Job(prompt, max_tokens, sampler, on_event))
    sources = await run_in_threadpool(service.answerer.sources, req.user_texts()[-1])
    extra = {"triage": None, "notice": DISCLAIMER, "sources": list(sources), "adapter": service.answerer.label}
    tail = footer(DISCLAIMER, sources) if service.serve.append_notice else ""
    answer = Answer(service, done, req, job, events, started)
    if req.stream:
        return StreamingResponse(answer.stream(extra, tail), media_type="text/event-stream")
    return await answer.whole(extra, tail)


class Answer:
    """One request's answer as it comes out of the decoder: streamed, or gathered whole."""

    def __init__(self, service: Service, done: Completion, req: ChatRequest, job: Job, events: asyncio.Queue,
                 started: float):
        self.service, self.done, self.req, self.job, self.events, self.started = service, done, req, job, events, started
        self.first_token_ms: int | None = None

    async def pieces(self):
        """(text, finish_reason) from the decoder until it finishes; the decoder is told if we stop early."""
        finish = None
        try:
            while finish is None:
                text, finish = await self.events.get()
                if self.first_token_ms is None:
                    self.first_token_ms = round(1000 * (time.perf_counter() - self.started))
                yield text, finish
        finally:
            if finish is None:  # the client went away mid-answer
                self.service.engine.cancel(self.job)

    def _log(self, status: int, finish: str | None) -> None:
        self.service.log_line(self.done, self.req, self.started, status=status, finish=finish,
                              prompt_tokens=len(self.job.prompt), completion_tokens=self.job.tokens,
                              first_token_ms=self.first_token_ms)

    async def whole(self, extra: dict, tail: str):
        parts, finish = [], None
        async for text, finish in self.pieces():
            parts.append(text)
        if finish not in ("stop", "length"):
            self._log(500, finish)
            raise ApiError(500, "the model failed while answering (see the server log)", code="generation_failed",
                           kind="server_error")
        self._log(200, finish)
        return self.done.reply("".join(parts) + tail, finish, usage(len(self.job.prompt), self.job.tokens), extra)

    async def stream(self, extra: dict, tail: str):
        finish = None
        try:
            yield self.done.chunk({"role": "assistant", "content": ""})
            async for text, finish in self.pieces():
                if text:
                    yield self.done.chunk({"content": text})
            if finish not in ("stop", "length"):
                yield sse(ApiError(500, "the model failed while answering", code="generation_failed",
                                   kind="server_error").body())
                return
            if tail:
                yield self.done.chunk({"content": tail})
            yield self.done.chunk({}, finish, medlora=extra)
            if (self.req.stream_options or {}).get("include_usage"):
                yield self.done.usage_chunk(usage(len(self.job.prompt), self.job.tokens))
            yield sse("[DONE]")
        finally:
            self._log(200 if finish in ("stop", "length") else 499, finish)


def triage_reply(service: Service, done: Completion, req: ChatRequest, flag):
    extra = {"triage": flag.kind, "notice": None, "sources": [], "adapter": service.answerer.label}
    if not req.stream:
        return done.reply(flag.message, "stop", usage(0, 0), extra)

    def chunks():
        yield done.chunk({"role": "assistant", "content": ""})
        yield done.chunk({"content": flag.message})
        yield done.chunk({}, "stop", medlora=extra)
        if (req.stream_options or {}).get("include_usage"):
            yield done.usage_chunk(usage(0, 0))
        yield sse("[DONE]")

    return StreamingResponse(chunks(), media_type="text/event-stream")
