"""The OpenAI chat-completions wire format that ``medlora serve`` speaks: requests, replies, stream chunks, errors.

Only what a chat client needs: ``messages``, ``stream``, ``max_tokens`` / ``max_completion_tokens``,
``temperature``, ``top_p``, ``stream_options.include_usage``; other fields clients send (``user``,
``seed``, ...) are accepted and ignored. Replies carry one extra object, ``medlora``:
``{"triage": kind or null, "notice": text or null, "sources": [urls], "adapter": label}``.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        """The message's text (a list of content parts: their ``text`` parts joined)."""
        if isinstance(self.content, list):
            return "".join(str(part.get("text", "")) for part in self.content if part.get("type", "text") == "text")
        return self.content or ""


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str | None = None  # any name: this server serves one model
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)  # the newer name of max_tokens
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    n: Literal[1] = 1
    stream_options: dict[str, Any] | None = None

    def conversation(self) -> list[dict[str, str]]:
        """The messages as chat-template input (``developer`` is the newer name of ``system``)."""
        return [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in self.messages]

    def user_texts(self) -> list[str]:
        return [m.text() for m in self.messages if m.role == "user"]


class ApiError(Exception):
    """A request the server refuses: HTTP ``status`` with an OpenAI-style error body."""

    def __init__(self, status: int, message: str, *, code: str, param: str | None = None,
                 kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.code, self.param, self.kind = status, message, code, param, kind

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


class Completion:
    """One chat completion's identity, shared by its reply or all its stream chunks."""

    def __init__(self, model_id: str):
        self.id, self.created, self.model = f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), model_id

    def _head(self, obj: str) -> dict:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}

    def reply(self, content: str, finish_reason: str, usage: dict, extra: dict) -> dict:
        choice = {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish_reason}
        return {**self._head("chat.completion"), "choices": [choice], "usage": usage, "medlora": extra}

    def chunk(self, delta: dict, finish_reason: str | None = None, **more) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
        return sse({**self._head("chat.completion.chunk"), "choices": [choice], **more})

    def usage_chunk(self, usage: dict) -> str:
        return sse({**self._head("chat.completion.chunk"), "choices": [], "usage": usage})


def sse(payload: dict | str) -> str:
    """One server-sent event: ``data: <json>`` and a blank line."""
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload)}\n\n"


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def validation_message(errors: list[dict]) -> tuple[str, str | None]:
    """A one-line message and the parameter it names, from FastAPI's validation errors."""
    first = errors[0] if errors else {}
    if first.get("type") == "json_invalid":
        return f"the request body is not valid JSON ({first.get('ctx', {}).get('error', 'parse error')})", None
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    param = ".".join(loc) or None
    text = first.get("msg", "invalid request")
    return (f"{param}: {text}" if param else text), param
