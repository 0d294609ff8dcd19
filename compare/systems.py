"""The agent front as a measured system (evaluation/systems.py `System`): `unlearn serve --agents` over HTTP.

It answers chat prompts (the user turn of each prompt) through the running front; raw-text completions
(MUSE's few-shot and verbatim prompts) are not chat requests, so those replies stay the engine's. A text
rewriter cannot move probabilities: `score` is None, the engine's numbers stand.
"""

from __future__ import annotations

import time
from typing import Callable, Optional, Sequence

from ..evaluation.systems import Batch, Generated
from .endpoint import AgentServer


class AgentFront:
    def __init__(self, server: AgentServer, tokenizer, name: str, concurrency: int = 8,
                 progress: Optional[Callable[[int], None]] = None):
        self.server, self.tokenizer, self.name = server, tokenizer, name
        self.concurrency, self.progress = concurrency, progress

    def fingerprint(self) -> str:
        return self.server.url

    def generate(self, batches: Sequence[Batch]) -> list[Generated]:
        return [self._batch(b) for b in batches]

    def _batch(self, batch: Batch) -> Generated:
        chat = [p for p in batch.prompts if p.question is not None]
        t0 = time.perf_counter()
        sampled = {"sampling": [(p.temperature, p.seed) for p in chat]} if any(p.temperature for p in chat) else {}
        replies = iter(self.server.ask_many([p.question for p in chat], [p.budget for p in chat], self.concurrency,
                                            self.progress, **sampled))
        seconds = time.perf_counter() - t0
        got = [next(replies) if p.question is not None else None for p in batch.prompts]
        failed = [r for r in got if r is not None and r["status"] != 200]
        if failed:
            raise RuntimeError(f"{len(failed)} requests to the agent server failed (first: HTTP {failed[0]['status']})")
        latency = [self.server.ask(p.question, p.budget)["seconds"] for p in chat[:batch.latency]]
        texts = [None if r is None else r["text"] for r in got]
        tokens = [0 if t is None else len(self.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
        return Generated(texts, tokens, seconds, latency, [{} if r is None else r["unlearn"] for r in got])

    def score(self, requests, token_budget: int, progress=None) -> None:
        return None

    def notes(self, requests, tasks) -> None:
        return None
