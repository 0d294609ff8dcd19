"""Two forbidden-phrase sets matched side by side, as one: a request's own phrases beside the
names check every request shares.

A flagged request is guarded against its targets' and items' phrases *and* every target's name
(the always-on names check). Merging the two into one trie / one automaton per request rebuilt the
names part for every new (items, targets) key: with 10,000 targets that is ~300,000 token sequences
and ~30,000 phrases per flagged request (seconds, and tens of MB each in the runtime's caches). The
unions below keep the shared part built once and combine the states instead. What they block is
exactly what the merged structure blocks: a token completes a phrase of the union of two sets iff
it completes a phrase of one of them, and each set's live matches do not depend on the other's.

`TrieDifference` and `MatcherDifference` pair the two the same way but block what the first blocks
and the second does not: the names check less the names a request wrote itself (withheld.py).

`TrieUnion` has TokenTrie's decode-time interface (a live state is a frozenset of node ids: the
second trie's shifted by OFFSET); `MatcherUnion` has TextMatcher's (a state is one int, the pair of
states packed). Both cache the blocked-token index per state, as the single structures do.
"""

from __future__ import annotations

from typing import Sequence

from .textmatch import TextMatcher
from .trie import TokenTrie

OFFSET = 1 << 40      # node ids of the second trie in a live set: far above any trie's size
MAX_CACHED = 4096


class TrieUnion:
    def __init__(self, first: TokenTrie, second: TokenTrie):
        self.first, self.second = first, second
        self._index_cache: dict = {}

    def __len__(self) -> int:
        return len(self.first) + len(self.second)

    def _split(self, live: frozenset) -> tuple[frozenset, frozenset]:
        return (frozenset(n for n in live if n < OFFSET), frozenset(n - OFFSET for n in live if n >= OFFSET))

    def advance(self, live: frozenset, token: int) -> frozenset:
        a, b = self._split(live)
        return self.first.advance(a, token) | frozenset(n + OFFSET for n in self.second.advance(b, token))

    def blocked(self, live: frozenset) -> frozenset:
        a, b = self._split(live)
        return self.first.blocked(a) | self.second.blocked(b)

    def blocked_index(self, live: frozenset, device=None):
        import torch

        key = (live, str(device))
        out = self._index_cache.get(key)
        if out is None:
            if len(self._index_cache) > MAX_CACHED:
                self._index_cache.clear()
            out = self._index_cache[key] = torch.tensor(sorted(self.blocked(live)), dtype=torch.long, device=device)
        return out


class TrieDifference(TrieUnion):
    """Tokens completing a sequence of the first trie and none of the second."""

    def blocked(self, live: frozenset) -> frozenset:
        a, b = self._split(live)
        return self.first.blocked(a) - self.second.blocked(b)


class MatcherUnion:
    def __init__(self, first: TextMatcher, second: TextMatcher):
        if first.texts is not second.texts:
            raise ValueError("a matcher union needs both matchers over the same token texts")
        self.first, self.second = first, second
        self.texts = first.texts
        self.size = second.states             # states of the second matcher: the packing base
        self.start = self._pack(first.start, second.start)
        self._index: dict = {}

    def __len__(self) -> int:
        return len(self.first) + len(self.second)

    @property
    def longest(self) -> int:
        return max(self.first.longest, self.second.longest)

    @property
    def states(self) -> int:
        """A bound on the packed states (a union can be the second matcher of another)."""
        return self.first.states * self.size

    def _pack(self, a: int, b: int) -> int:
        return a * self.size + b

    def advance(self, state: int, text: str) -> int:
        a, b = divmod(state, self.size)
        return self._pack(self.first.advance(a, text), self.second.advance(b, text))

    def advance_tokens(self, state: int, tokens: Sequence[int]) -> int:
        a, b = divmod(state, self.size)
        return self._pack(self.first.advance_tokens(a, tokens), self.second.advance_tokens(b, tokens))

    def idle(self, state: int) -> bool:
        a, b = divmod(state, self.size)
        return self.first.idle(a) and self.second.idle(b)

    def blocked(self, state: int) -> frozenset[int]:
        a, b = divmod(state, self.size)
        return self.first.blocked(a) | self.second.blocked(b)

    def blocked_index(self, state: int, device=None):
        import torch

        key = (state, str(device))
        out = self._index.get(key)
        if out is None:
            if len(self._index) > MAX_CACHED:
                self._index.clear()
            out = self._index[key] = torch.tensor(sorted(self.blocked(state)), dtype=torch.long, device=device)
        return out


class MatcherDifference(MatcherUnion):
    """Tokens completing a phrase of the first matcher and none of the second."""

    def blocked(self, state: int) -> frozenset[int]:
        a, b = divmod(state, self.size)
        return self.first.blocked(a) - self.second.blocked(b)
