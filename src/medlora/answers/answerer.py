"""A loaded model behind medlora's safety layer, for the MLflow model and ``medlora serve``.

The same steps as ``medlora ask``: triage first (a red flag gets its fixed message and the model
is never run), then the model's answer, the not-medical-advice notice and the related NIH pages
(BM25 over the training split, built once per process). With ``ask.rag`` the retrieved answers
are given to the model as context, as in ``ask``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from medlora.answers import retrieval, safety
from medlora.config import RunConfig
from medlora.data import splits
from medlora.models.generation import generate_answers, stop_at_special_tokens


@dataclass(frozen=True)
class Reply:
    text: str  # the generated answer, or the triage message
    triage: str | None  # the red flag's kind; None when the model answered
    notice: str | None  # the not-medical-advice notice (None for a triage message)
    sources: tuple[str, ...]  # related NIH pages


def footer(notice: str, sources: tuple[str, ...] | list[str]) -> str:
    """The text ``medlora ask`` prints under an answer: the notice, then the cited pages."""
    cited = "".join(f"  - {url}\n" for url in sources)
    return f"\n\n{notice}\n" + (f"Sources (related NIH pages):\n{cited}" if cited else "")


def first_red_flag(questions: list[str]):
    """The triage of the first red-flag question among ``questions`` (all a user said), or None."""
    for question in questions:
        flag = safety.triage(question)
        if flag is not None:
            return flag
    return None


class Answerer:
    """``model`` + ``tokenizer`` (base + adapter) answering as ``ask`` does; ``label`` names them."""

    def __init__(self, cfg: RunConfig, model, tokenizer, label: str):
        self.cfg, self.model, self.tokenizer, self.label = cfg, model, tokenizer, label
        stop_at_special_tokens(tokenizer)
        self._index: retrieval.BM25 | None = None
        self._index_lock = threading.Lock()
        self._model_lock = threading.Lock()  # one decoding at a time (a server may call from several threads)

    def _search(self, question: str, k: int) -> list[retrieval.Hit]:
        if k <= 0:
            return []
        with self._index_lock:
            if self._index is None:
                split_dir = splits.prepare_from_config(self.cfg.data, self.cfg.paths.processed)
                self._index = retrieval.BM25(splits.load_split(split_dir, "train"))
        return self._index.search(question, k)

    def warm_up(self) -> None:
        """Build the retrieval index now rather than on the first question."""
        self._search("warm up", 1 if self.cfg.ask.sources or self.cfg.ask.rag else 0)

    def sources(self, question: str) -> tuple[str, ...]:
        return tuple(retrieval.sources(self._search(question, self.cfg.ask.sources)))

    def model_question(self, question: str) -> str:
        """What the model is asked: the question, with retrieved answers as context if ``ask.rag``."""
        if not self.cfg.ask.rag:
            return question
        return retrieval.context_prompt(question, self._search(question, self.cfg.ask.rag_passages))

    def prompt(self, messages: list[dict]) -> list[int]:
        """Token ids of a conversation (the configured system prompt unless it has one), ready to answer."""
        messages = [dict(m) for m in messages]
        if messages and messages[-1]["role"] == "user":
            messages[-1]["content"] = self.model_question(messages[-1]["content"])
        if self.cfg.data.system_prompt and not any(m["role"] == "system" for m in messages):
            messages.insert(0, {"role": "system", "content": self.cfg.data.system_prompt})
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=False)

    def answer_all(self, questions: list[str], max_tokens: int | None = None) -> list[Reply]:
        """Replies to independent questions; the model answers the ones without a red flag, in batches."""
        flags = [safety.triage(q) for q in questions]
        todo = [self.model_question(q) for q, flag in zip(questions, flags) if flag is None]
        with self._model_lock:
            generated = iter(generate_answers(
                self.model, self.tokenizer, todo, max_tokens=max_tokens or self.cfg.generation.max_tokens,
                system_prompt=self.cfg.data.system_prompt, settings=self.cfg.generation,
                batch_size=self.cfg.evaluate.generation_batch_size) if todo else [])
        return [Reply(flag.message, flag.kind, None, ()) if flag is not None else
                Reply(next(generated), None, safety.DISCLAIMER, self.sources(q))
                for q, flag in zip(questions, flags)]
