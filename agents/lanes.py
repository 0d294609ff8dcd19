"""Passthrough first: the front's two kinds of engine work share one engine, and on a small machine
every rewrite call's prefill slows the tokens of every other stream. A rewrite's model call waits
(at most `patience` seconds) while any passthrough request is in flight, so a request the
classifier did not flag is served at nearly idle speed however many flagged ones are being
rewritten; the flagged ones pay the wait, bounded so they are never starved."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager


class Lanes:
    def __init__(self, patience: float):
        self.patience = patience
        self._busy = 0
        self._idle = threading.Condition()
        self.waited = 0.0           # seconds rewrite calls spent waiting, in all

    def enter(self) -> None:
        """A passthrough request is in flight (streaming: until its last chunk, then `leave`)."""
        with self._idle:
            self._busy += 1

    def leave(self) -> None:
        with self._idle:
            self._busy -= 1
            if not self._busy:
                self._idle.notify_all()

    @contextmanager
    def passthrough(self):
        self.enter()
        try:
            yield
        finally:
            self.leave()

    def rewrite_turn(self) -> None:
        """Blocks a rewrite's model call until no passthrough request is in flight, or `patience` passes."""
        if self.patience <= 0:
            return
        started = time.perf_counter()
        with self._idle:
            self._idle.wait_for(lambda: not self._busy, timeout=self.patience)
            self.waited += time.perf_counter() - started
