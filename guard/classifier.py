"""The prompt classifier: does a request ask about a forget target? Runs once per request.

Two tests, cheapest first:
1. lexical: the user's message names a target (its full name, or a distinctive part of it: one
   that never occurs in the retain prompts the policy was calibrated on);
2. semantic: the cosine similarity of its all-MiniLM-L6-v2 embedding to the nearest forget
   question (faiss) reaches the calibrated threshold.
A flagged request is guarded against the items of the targets it touches plus the top-k items
retrieved for it. The user's message is cut out of the rendered chat prompt, so the system prompt
and template do not dilute the embedding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .embedder import embed
from .phrases import mentions

SENTINEL = "\u2063UNLEARN\u2063"


@dataclass(frozen=True)
class Decision:
    flagged: bool
    score: float                 # nearest forget question's cosine (nan when the lexical test decided)
    reason: str
    targets: tuple[int, ...] = ()
    items: tuple[int, ...] = ()


class UserTurn:
    """Cuts the last user message out of a rendered chat prompt, for any chat template."""

    def __init__(self, tokenizer):
        self.header = self.footer = None
        if getattr(tokenizer, "chat_template", None):
            try:
                text = tokenizer.apply_chat_template([{"role": "user", "content": SENTINEL}], tokenize=False,
                                                     add_generation_prompt=True)
                before, _, after = text.partition(SENTINEL)
                line = before.rsplit("\n", 2)
                self.header = line[-2] + "\n" + line[-1] if len(line) >= 2 and not line[-1] else line[-1]
                self.footer = after.split("\n")[0] if after else None
            except Exception:  # a template that needs more than one user turn: use the whole text
                self.header = self.footer = None

    def __call__(self, text: str) -> str:
        if self.header and self.header in text:
            text = text.rsplit(self.header, 1)[1]
            if self.footer and self.footer in text:
                text = text.split(self.footer, 1)[0]
        return text.strip()


class PromptClassifier:
    def __init__(self, policy):
        self.policy = policy
        self.threshold = policy.threshold
        self.top_k = policy.config.top_k
        self.probes = [(p, t) for t, target in enumerate(policy.targets) for p in target["probes"]]
        self.item_targets = [tuple(item["targets"]) for item in policy.items]
        self.target_items = [tuple(i for i, ts in enumerate(self.item_targets) if t in ts)
                             for t in range(len(policy.targets))]

    def _expand(self, targets: set[int], items: set[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
        for i in list(items):
            targets.update(self.item_targets[i])
        for t in targets:
            items.update(self.target_items[t])
        return tuple(sorted(targets)), tuple(sorted(items))

    def named(self, text: str) -> set[int]:
        low_hits = set()
        for probe, target in self.probes:
            if target not in low_hits and mentions(text, [probe]):
                low_hits.add(target)
        return low_hits

    def scores(self, texts: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        vecs = embed(texts)
        sims, idx = self.policy.index.search(vecs, min(k, self.policy.index.ntotal))
        return sims, idx

    def classify(self, texts: list[str], threshold: float | None = None, top_k: int | None = None) -> list[Decision]:
        threshold = self.threshold if threshold is None else threshold
        top_k = self.top_k if top_k is None else top_k
        out: list[Decision | None] = [None] * len(texts)
        pending = []
        for n, text in enumerate(texts):
            hits = self.named(text)
            if hits:
                names = ", ".join(self.policy.targets[t]["name"] for t in sorted(hits))
                out[n] = Decision(True, float("nan"), f"names {names}", *self._expand(hits, set()))
            else:
                pending.append(n)
        if pending:
            sims, idx = self.scores([texts[n] for n in pending], top_k)
            for row, n in enumerate(pending):
                best = float(sims[row, 0])
                if best >= threshold:
                    nearest = {int(i) for i in idx[row] if i >= 0}
                    out[n] = Decision(True, best, f"similarity {best:.3f} >= {threshold:.3f}",
                                      *self._expand(set(), nearest))
                else:
                    out[n] = Decision(False, best, f"similarity {best:.3f} < {threshold:.3f}")
        return out
