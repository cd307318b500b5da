"""``medlora ask``: one question in, a safe answer out.

    triage (red flags get a fixed message, never a generated answer; risky questions a caution line)
    -> retrieve related NIH records (BM25 over the training split)
    -> the champion answers, streamed (with the retrieved answers as context if ask.rag); a risky
       question's answer is generated whole and checked first, and withheld if it gives the
       dangerous instruction (:func:`medlora.answers.safety.check_answer`)
    -> the not-medical-advice notice and the cited source pages

``answer_all`` applies the same triage and check to a list of questions. ``medlora evaluate``
does not: its model rows score the answers as the model generates them.
"""

from __future__ import annotations

from collections.abc import Iterator

from medlora.answers import retrieval, safety
from medlora.config import RunConfig
from medlora.data import splits
from medlora.models.generation import generate_answers, stream_answer
from medlora.registry.champion import load_with_champion


def retrieve(run_cfg: RunConfig, question: str, k: int) -> list[retrieval.Hit]:
    """The ``k`` training records most related to ``question`` (BM25), for citations and RAG context."""
    if k <= 0:
        return []
    split_dir = splits.prepare_from_config(run_cfg.data, run_cfg.paths.processed)
    return retrieval.BM25(splits.load_split(split_dir, "train")).search(question, k)


def ask(cfg: RunConfig, question: str) -> Iterator[str]:
    """The text a user sees for ``question``, piece by piece (the answer streams as it is generated)."""
    flag = safety.triage(question)
    if flag is not None and flag.urgent:  # never a generated answer
        yield flag.message + "\n"
        return
    model, tokenizer, version = load_with_champion(cfg)  # first: no champion, nothing prepared
    hits = retrieve(cfg, question, max(cfg.ask.sources, cfg.ask.rag_passages if cfg.ask.rag else 0))
    prompt = retrieval.context_prompt(question, hits[: cfg.ask.rag_passages]) if cfg.ask.rag else question
    pieces = stream_answer(model, tokenizer, prompt, max_tokens=cfg.generation.max_tokens,
                           system_prompt=cfg.data.system_prompt, settings=cfg.generation)
    if flag is None:
        yield from pieces
    else:  # risky: the caution line, then the whole answer once it has passed the check
        yield flag.message + "\n\n"
        yield safety.check_answer("".join(pieces))
    yield f"\n\n{safety.DISCLAIMER}\n"
    cited = retrieval.sources(hits[: cfg.ask.sources])
    if cited:
        yield "Sources (related NIH pages):\n" + "".join(f"  - {url}\n" for url in cited)
    yield f"[{cfg.model.name} + champion adapter v{version.version}{', retrieval-augmented' if cfg.ask.rag else ''}]\n"


def answer_all(cfg: RunConfig, questions: list[str], model=None, tokenizer=None) -> list[str]:
    """Answers to many questions, with ``ask``'s triage: a red flag gets its triage message, never a
    generated answer; a risky question its caution line and the checked answer. The rest are
    decoded in batches by the champion (or the ``model`` given)."""
    flags = [safety.triage(q) for q in questions]
    todo = [q for q, flag in zip(questions, flags) if flag is None or not flag.urgent]
    if todo and model is None:
        model, tokenizer, _ = load_with_champion(cfg)
    generated = iter(generate_answers(model, tokenizer, todo, max_tokens=cfg.generation.max_tokens,
                                      system_prompt=cfg.data.system_prompt, settings=cfg.generation,
                                      batch_size=cfg.evaluate.generation_batch_size) if todo else [])
    return [next(generated) if flag is None else flag.message if flag.urgent else
            safety.guarded_answer(flag, next(generated)) for flag in flags]
