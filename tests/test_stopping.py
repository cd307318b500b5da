"""A Ctrl-C / SIGTERM that a library swallowed still stops training at the next batch."""

from __future__ import annotations

import os
import signal

import pytest

from medlora import stopping
from medlora.training.batches import batch_iterator


def test_a_swallowed_sigterm_stops_the_next_batch():
    previous = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    stopping.install()
    try:
        dataset = [([1, 2, 3, 4], 0)] * 8
        batches = batch_iterator(train_seed=0, eval_batch_size=2)(dataset, 2, 16, loop=True)
        next(batches)
        try:  # what a weakref callback does with the interrupt: "Exception ignored", and go on
            os.kill(os.getpid(), signal.SIGTERM)
        except KeyboardInterrupt:
            pass
        with pytest.raises(KeyboardInterrupt):
            next(batches)
        stopping.check()  # asked once, raised once: the handlers that run next are not interrupted again
    finally:
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])
