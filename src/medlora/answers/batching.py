"""Continuous batching for ``medlora serve``: one thread decodes every request in flight together.

On a CPU, decoding one sequence reads every weight once per token (memory-bound), so requests
decoded together share those reads. mlx-lm's ``BatchGenerator`` does the batching (requests join
and leave the batch between steps); this module owns the thread around it: requests come in
through :meth:`Engine.submit`, their text comes back piece by piece through the job's callback.
Only this thread touches the model.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("medlora.serve")

# on_event(text, finish_reason): the text decoded since the last call; finish_reason is None until the
# end, then "stop" (end-of-turn token), "length" (max_tokens reached), "error" or "cancelled" (exactly once)
OnEvent = Callable[[str, "str | None"], None]


@dataclass
class Job:
    prompt: list[int]
    max_tokens: int
    sampler: Callable
    on_event: OnEvent
    tokens: int = 0  # generated so far
    cancelled: bool = False
    detokenizer: object = field(default=None, repr=False)


class Engine:
    """Owns the decoding thread; ``max_batch`` requests are decoded together, later ones wait in line."""

    def __init__(self, model, tokenizer, *, logits_processors: list, max_batch: int):
        self.model, self.tokenizer = model, tokenizer
        self.logits_processors, self.max_batch = logits_processors, max_batch
        self.peak = 0  # the most requests decoded together so far
        self._inbox: queue.Queue[Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="medlora-decoder", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> Job:
        self._inbox.put(job)
        return job

    def cancel(self, job: Job) -> None:
        """Stop decoding ``job`` (its client went away); takes effect before the next step."""
        job.cancelled = True

    def close(self) -> None:
        self._inbox.put(None)
        self._thread.join(timeout=30)

    def _run(self) -> None:
        import mlx.core as mx
        from mlx_lm.generate import BatchGenerator

        stream = mx.default_stream(mx.default_device())  # this thread's: all decoding runs on it
        gen = BatchGenerator(self.model, stop_tokens=[[t] for t in self.tokenizer.eos_token_ids],
                             logits_processors=self.logits_processors, completion_batch_size=self.max_batch,
                             prefill_batch_size=self.max_batch, stream=stream)
        active: dict[int, Job] = {}
        while True:
            if not self._admit(gen, active):
                break
            if not active:
                continue
            try:
                responses = gen.next_generated()
            except Exception as err:  # noqa: BLE001 - a decoding failure ends the jobs in flight, not the server
                log.exception("decoding failed: %s", err)
                for job in active.values():
                    job.on_event("", "error")
                gen.remove(list(active))
                active.clear()
                continue
            for response in responses:
                self._deliver(active, response)
        gen.close()

    def _admit(self, gen, active: dict[int, Job]) -> bool:
        """Move waiting jobs into the batch (blocking while idle) and drop cancelled ones; False: shut down."""
        try:
            job = self._inbox.get() if not active else self._inbox.get_nowait()
            while True:
                if job is None:
                    return False
                if job.cancelled:
                    job.on_event("", "cancelled")
                else:
                    self._insert(gen, active, job)
                job = self._inbox.get_nowait()
        except queue.Empty:
            pass
        self.peak = max(self.peak, len(active))
        gone = [uid for uid, job in active.items() if job.cancelled]
        if gone:
            gen.remove(gone)
            for uid in gone:
                active.pop(uid).on_event("", "cancelled")
        return True

    def _insert(self, gen, active: dict[int, Job], job: Job) -> None:
        try:
            uid = gen.insert([job.prompt], [job.max_tokens], samplers=[job.sampler])[0]
        except Exception as err:  # noqa: BLE001 - a request mlx-lm refuses fails alone
            log.error("request refused by the decoder: %s", err)
            job.on_event("", "error")
            return
        job.detokenizer = self.tokenizer.detokenizer
        active[uid] = job

    def _deliver(self, active: dict[int, Job], response) -> None:
        job = active.get(response.uid)
        if job is None:
            return
        detok = job.detokenizer
        if response.finish_reason != "stop":  # the end-of-turn token itself is not part of the answer
            detok.add_token(response.token)
            job.tokens += 1
        if response.finish_reason is None:
            segment = detok.last_segment  # reading it consumes it
            if segment:
                job.on_event(segment, None)
            return
        detok.finalize()
        job.on_event(detok.last_segment, response.finish_reason)
        del active[response.uid]
