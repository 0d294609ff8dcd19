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

from .embedder import embed
from .phrases import ProbeIndex

SENTINEL = "\u2063UNLEARN\u2063"


@dataclass(frozen=True)
class Decision:
    flagged: bool
    score: float                 # nearest forget question's cosine (nan when the lexical test decided)
    reason: str
    targets: tuple[int, ...] = ()
    items: tuple[int, ...] = ()
    nearest: tuple[int, ...] = ()   # the top-k retrieved items, also for unflagged prompts (a forced guard uses them)


def _common_suffix(a: str, b: str) -> str:
    n = 0
    while n < min(len(a), len(b)) and a[-1 - n] == b[-1 - n]:
        n += 1
    return a[len(a) - n:]


class UserTurn:
    """Cuts the user messages out of a rendered chat prompt, for any chat template.

    The template is rendered twice, as a first turn and after an exchange; the text both renders
    share right before the message is the user-turn header (without a BOS or system prompt), and
    the text right after it up to its first newline ends the message."""

    def __init__(self, tokenizer):
        self.header = self.footer = None
        if not getattr(tokenizer, "chat_template", None):
            return
        render = lambda msgs: tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)  # noqa: E731
        try:
            first = render([{"role": "user", "content": SENTINEL}])
        except Exception:  # no usable template: the whole text is the message
            return
        before, _, after = first.partition(SENTINEL)
        try:
            later = render([{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"},
                            {"role": "user", "content": SENTINEL}])
            header = _common_suffix(before, later.partition(SENTINEL)[0])
        except Exception:  # a template that refuses multi-turn: the last line before the message
            stripped = before.rstrip("\n")
            header = stripped.rsplit("\n", 1)[-1] + before[len(stripped):]
        self.header = header if header.strip() else None
        self.footer = (after.split("\n")[0] or None) if after else None

    def segments(self, text: str) -> list[str]:
        """Every user message in order (the whole text when the template's markers are absent)."""
        if not self.header or self.header not in text:
            return [text.strip()]
        out = []
        for part in text.split(self.header)[1:]:
            if self.footer and self.footer in part:
                part = part.split(self.footer, 1)[0]
            out.append(part.strip())
        return out or [text.strip()]

    def __call__(self, text: str) -> str:
        """The last user message."""
        return self.segments(text)[-1]


class PromptClassifier:
    def __init__(self, policy):
        self.policy = policy
        self.threshold = policy.threshold
        self.top_k = policy.config.top_k
        self.probes = ProbeIndex((p, t) for t, target in enumerate(policy.targets) for p in target["probes"])
        self.item_targets = [tuple(item["targets"]) for item in policy.items]
        self.target_items = [tuple(i for i, ts in enumerate(self.item_targets) if t in ts)
                             for t in range(len(policy.targets))]

    def expand(self, targets: set[int], items: set[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Close a set of targets and items: the targets of the items, then all items of the targets."""
        for i in list(items):
            targets.update(self.item_targets[i])
        for t in targets:
            items.update(self.target_items[t])
        return tuple(sorted(targets)), tuple(sorted(items))

    def named(self, text: str) -> set[int]:
        """The targets whose name (or a distinctive part of it) `text` contains as whole words."""
        return self.probes.find(text)

    def classify(self, prompts: list, threshold: float | None = None, top_k: int | None = None) -> list[Decision]:
        """One decision per prompt. A prompt is a string (one message) or (whole prompt text, user
        messages): the lexical test reads the whole text (every turn, the system prompt too); the
        semantic test scores the last message and, when there are several, all of them together."""
        threshold = self.threshold if threshold is None else threshold
        top_k = min(self.top_k if top_k is None else top_k, self.policy.index.ntotal)
        prompts = [(p, [p]) if isinstance(p, str) else p for p in prompts]
        out: list[Decision | None] = [None] * len(prompts)
        queries, owner = [], []
        for n, (whole, segments) in enumerate(prompts):
            hits = self.named(whole)
            if hits:
                names = ", ".join(self.policy.targets[t]["name"] for t in sorted(hits))
                out[n] = Decision(True, float("nan"), f"names {names}", *self.expand(hits, set()))
                continue
            queries.append(segments[-1])
            owner.append(n)
            if len(segments) > 1:
                queries.append("\n".join(segments))
                owner.append(n)
        if queries:
            sims, idx = self.policy.index.search(embed(queries), top_k)
            best: dict[int, tuple[float, set[int]]] = {}
            for row, n in enumerate(owner):
                score, nearest = best.get(n, (-2.0, set()))
                best[n] = (max(score, float(sims[row, 0])), nearest | {int(i) for i in idx[row] if i >= 0})
            for n, (score, nearest) in best.items():
                if score >= threshold:
                    out[n] = Decision(True, score, f"similarity {score:.3f} >= {threshold:.3f}",
                                      *self.expand(set(), set(nearest)), nearest=tuple(sorted(nearest)))
                else:
                    out[n] = Decision(False, score, f"similarity {score:.3f} < {threshold:.3f}",
                                      nearest=tuple(sorted(nearest)))
        return out
