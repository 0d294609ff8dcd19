"""Per-request decode-time guard state and the batch of slots both vLLM adapters drive.

Each flagged request owns a `RequestGuard`: its trie, its live match nodes, how many output tokens
it has consumed, and an optional additive penalty over the vocabulary. `GuardSlots` maps batch
slots to guards with the operations vLLM's persistent batch performs (add, remove, move, swap) and
applies all of them to a [rows, vocab] logits tensor. Unflagged requests have no guard and their
rows are never touched, so they decode exactly as without the guard. Plain torch; no vLLM here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch

from .trie import TokenTrie

BLOCKED = float("-inf")


@dataclass
class RequestGuard:
    trie: TokenTrie
    penalty: Optional[torch.Tensor] = None      # [vocab], added to the logits (<= 0 where discouraged)
    live: frozenset = field(default_factory=frozenset)
    consumed: int = 0

    def observe(self, output_ids: Sequence[int]) -> None:
        """Advance over output tokens not seen yet (vLLM appends to the same list)."""
        for tok in output_ids[self.consumed:]:
            self.live = self.trie.advance(self.live, tok)
        self.consumed = len(output_ids)

    def blocked(self) -> list[int]:
        return sorted(self.trie.blocked(self.live))


class GuardSlots:
    """slot index -> (guard, the request's output-token list)."""

    def __init__(self):
        self.slots: dict[int, tuple[RequestGuard, Sequence[int]]] = {}

    def add(self, index: int, guard: Optional[RequestGuard], output_ids: Sequence[int]) -> None:
        """A request (re)uses `index`; an unguarded request clears whatever was there."""
        if guard is None:
            self.slots.pop(index, None)
        else:
            self.slots[index] = (guard, output_ids)

    def remove(self, index: int) -> None:
        self.slots.pop(index, None)

    def move(self, src: int, dst: int, swap: bool) -> None:
        a, b = self.slots.pop(src, None), self.slots.pop(dst, None)
        if a is not None:
            self.slots[dst] = a
        if swap and b is not None:
            self.slots[src] = b

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        """Add penalties and block completing tokens, in place, for guarded rows only."""
        for index, (guard, output_ids) in self.slots.items():
            if index >= logits.shape[0]:
                continue
            guard.observe(output_ids)
            row = logits[index]
            if guard.penalty is not None:
                row += guard.penalty.to(row.device, row.dtype)
            blocked = guard.blocked()
            if blocked:
                row[torch.tensor(blocked, device=row.device)] = BLOCKED
        return logits
