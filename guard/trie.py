"""Forbidden token sequences in a trie, matched incrementally while a response is decoded.

A sequence is forbidden as a whole: only its *last* token is blocked, and only right after the
decoder produced all the tokens before it. Single-token sequences are blocked everywhere.
Matching is incremental (a set of live trie nodes per request, advanced by one token per step),
so the decode-time cost does not grow with the length of the response.

The same phrase tokenises differently at the start of a word, after a space, or in another case
("Basil" / " Basil" / " basil" / "BASIL"); `phrase_variants` lists the surface forms whose token
sequences are all added.
"""

from __future__ import annotations

from typing import Iterable, Sequence

ROOT = 0
NOTHING: frozenset[int] = frozenset()


def phrase_variants(phrase: str, word_starts_only: bool = False) -> list[str]:
    """Surface forms of a phrase worth blocking: as is, lower, Title and UPPER case, each with and
    without a leading space (a word inside a sentence carries the space in most BPE vocabularies).
    `word_starts_only`: the forms with the space alone. A form without it also tokenizes as a piece
    that ends other words ("ines" is one token in both default vocabularies: "Vacc|ines",
    "mach|ines"), so a trie of it blocks that piece inside any word; the text matcher (textmatch.py)
    covers a word start without a space (the response's first word, after punctuation) instead."""
    phrase = phrase.strip()
    if not phrase:
        return []
    cases = dict.fromkeys([phrase, phrase.lower(), phrase.title(), phrase.upper(), phrase[:1].upper() + phrase[1:]])
    return [v for c in cases for v in ((" " + c,) if word_starts_only else (c, " " + c))]


def token_sequences(tokenizer, phrases: Iterable[str], word_starts_only: bool = False) -> list[list[int]]:
    """The tokenizer's ids for every variant (case, leading space) of every phrase, without repeats."""
    variants = [v for phrase in phrases for v in phrase_variants(phrase, word_starts_only)]
    if not variants:
        return []
    out, seen = [], set()
    for ids in tokenizer(variants, add_special_tokens=False)["input_ids"]:   # one batched call
        ids = tuple(ids)
        if ids and ids not in seen:
            seen.add(ids)
            out.append(list(ids))
    return out


class TokenTrie:
    def __init__(self, sequences: Iterable[Sequence[int]] = ()):
        self._children: list[dict[int, int]] = [{}]
        self._terminal: list[bool] = [False]
        self._blocked_at: list[frozenset[int]] = []  # per node: children that end a sequence
        self._index_cache: dict = {}                   # (live nodes, device) -> index tensor
        for seq in sequences:
            self.add(seq)

    def add(self, seq: Sequence[int]) -> None:
        if not seq:
            raise ValueError("an empty token sequence cannot be forbidden")
        node = ROOT
        for tok in seq:
            nxt = self._children[node].get(int(tok))
            if nxt is None:
                nxt = len(self._children)
                self._children[node][int(tok)] = nxt
                self._children.append({})
                self._terminal.append(False)
            node = nxt
        self._terminal[node] = True
        self._blocked_at = []  # recomputed lazily
        self._index_cache = {}

    @classmethod
    def from_phrases(cls, tokenizer, phrases: Iterable[str]) -> "TokenTrie":
        return cls(token_sequences(tokenizer, phrases))

    def __len__(self) -> int:
        return sum(self._terminal)

    def _blocked(self, node: int) -> frozenset[int]:
        if not self._blocked_at:
            self._blocked_at = [frozenset(t for t, c in ch.items() if self._terminal[c]) for ch in self._children]
        return self._blocked_at[node]

    def advance(self, live: frozenset[int], token: int) -> frozenset[int]:
        """Live nodes after `token`: every live node (and the root, where a new match may start)
        that has `token` as a child moves to that child."""
        if not live:     # most rows of most steps: only a match starting here can be live after it
            nxt = self._children[ROOT].get(int(token))
            return frozenset((nxt,)) if nxt is not None and self._children[nxt] else NOTHING
        out = set()
        for node in live | {ROOT}:
            nxt = self._children[node].get(int(token))
            if nxt is not None and self._children[nxt]:  # a leaf cannot continue a match
                out.add(nxt)
        return frozenset(out)

    def blocked_index(self, live: frozenset[int], device=None):
        """`blocked` as a (cached) index tensor: most decode steps repeat a few live states."""
        import torch

        key = (live, str(device))
        out = self._index_cache.get(key)
        if out is None:
            if len(self._index_cache) > 4096:
                self._index_cache.clear()
            out = self._index_cache[key] = torch.tensor(sorted(self.blocked(live)), dtype=torch.long, device=device)
        return out

    def blocked(self, live: frozenset[int]) -> frozenset[int]:
        """Tokens that would complete a forbidden sequence from here."""
        out: frozenset[int] = self._blocked(ROOT)
        for node in live:
            out = out | self._blocked(node)
        return out
