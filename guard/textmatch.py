"""Forbidden phrases matched on the decoded text, whatever the token boundaries.

The token trie (trie.py) blocks the token that completes a forbidden *token sequence*. A model can
still spell a name with pieces whose last one runs past the name's end (" Ab" + "il" + "ova"
spells "Abilova", which contains "Abilo"). `TextMatcher` works on characters instead: an
Aho-Corasick automaton over the phrases (lower-cased; anything that is not a letter or digit is a
space, and every phrase starts with one, so a match begins at a word start). Its state after the
response so far knows every phrase prefix the text currently ends with; the tokens to block are
those whose text starts with the rest of such a phrase. Case variants and any token split are
covered; the blocked set is computed once per automaton state and cached. Plain Python + torch.
"""

from __future__ import annotations

import bisect
from collections import deque
from typing import Iterable, Sequence

from .disguise import fold


def normalise(text: str) -> str:
    """Folded (`disguise.fold`: NFKC, invisible characters and diacritics dropped, look-alike
    letters mapped to Latin, so "Kálo", "Kаlo" with a Cyrillic а and full-width letters read as
    "kalo"), lower case; every character that is not a letter or digit becomes a space, except
    U+FFFD (a byte fragment of a multi-byte character), which is dropped rather than made a word
    start."""
    return "".join(c if c.isalnum() else " " for c in fold(text).lower() if c != "\ufffd")


class TokenTexts:
    """Each token's normalised text, and the tokens whose text starts with a given string."""

    def __init__(self, tokenizer, cache_size: int = 50_000):
        # special tokens have no text in a reply (`skip_special_tokens`), also those only marked special where
        # they were added (reserved and header tokens): transparent, so that one inside a name does not hide it
        special = set(tokenizer.all_special_ids) | {
            i for i, added in getattr(tokenizer, "added_tokens_decoder", {}).items() if getattr(added, "special", False)}
        ids = list(range(len(tokenizer)))
        # decoded after an anchor token, minus the anchor's text: SentencePiece tokenizers drop a
        # token's leading word-start marker when it is decoded on its own
        anchor = tokenizer("a", add_special_tokens=False)["input_ids"][-1:]
        prefix = tokenizer.decode(anchor)
        texts = [t[len(prefix):] if t.startswith(prefix) else t
                 for t in tokenizer.batch_decode([anchor + [i] for i in ids])]
        self._index(["" if i in special else normalise(t) for i, t in zip(ids, texts)], cache_size)

    def spelled(self) -> "TokenTexts":
        """The same vocabulary with letters and digits only (no word boundaries): the view a
        spelled-out name ("K a l o", "K-a-l-o", "K.a.l.o") is matched on."""
        view = object.__new__(TokenTexts)
        view._index([t.replace(" ", "") for t in self.text], self.cache_size)
        return view

    def _index(self, text: list[str], cache_size: int) -> None:
        self.text = text
        self.cache_size = cache_size
        order = sorted((t, i) for i, t in enumerate(self.text) if t)
        self._sorted = [t for t, _ in order]
        self._ids = [i for _, i in order]
        self._cache: dict[str, list[int]] = {}
        inner = [(text[j:], tok) for tok, text in enumerate(self.text) if len(text) > 1
                 for j in range(1, len(text)) if text[j] == " "]
        inner.sort()
        self._inner = [t for t, _ in inner]
        self._inner_ids = [i for _, i in inner]

    def holding_inside(self, phrase: str) -> list[int]:
        """Tokens with a word start past their first character at which `phrase` (which starts with
        a space) begins, e.g. ' (Abilova' for ' abilova': one binary search, whatever the vocabulary."""
        lo = bisect.bisect_left(self._inner, phrase)
        hi = bisect.bisect_left(self._inner, phrase + "\U0010ffff")
        return self._inner_ids[lo:hi]

    def letters(self, token: int) -> int:
        """Letters and digits in a token's text (none for ids past the tokenizer)."""
        text = self.text[token] if 0 <= token < len(self.text) else ""
        return len(text) - text.count(" ")

    def starting_with(self, prefix: str) -> list[int]:
        out = self._cache.get(prefix)
        if out is None:
            if len(self._cache) >= self.cache_size:   # request-specific phrases must not grow it forever
                self._cache.clear()
            lo = bisect.bisect_left(self._sorted, prefix)
            hi = bisect.bisect_left(self._sorted, prefix + "\U0010ffff")
            out = self._cache[prefix] = self._ids[lo:hi]
        return out


class TextMatcher:
    def __init__(self, phrases: Iterable[str], texts: TokenTexts, spelled: bool = False):
        """`spelled`: match the phrases' letters and digits in order whatever separates them
        ("K a l o  M i r t e n"), on `texts.spelled()`; no word-start condition."""
        self.texts = texts
        self.goto: list[dict[str, int]] = [{}]
        self.fail: list[int] = [0]
        self.rest: list[list[str]] = [[]]          # per state: what would complete a phrase from it
        keys = ((normalise(p).replace(" ", "") if spelled else " " + normalise(p).strip()) for p in phrases
                if normalise(p).strip())
        for phrase in dict.fromkeys(keys):
            node = 0
            for depth, ch in enumerate(phrase):
                self.rest[node].append(phrase[depth:])
                nxt = self.goto[node].get(ch)
                if nxt is None:
                    nxt = len(self.goto)
                    self.goto[node][ch] = nxt
                    self.goto.append({})
                    self.fail.append(0)
                    self.rest.append([])
                node = nxt
        queue = deque(self.goto[0].values())
        while queue:                                 # failure links, breadth first
            node = queue.popleft()
            for ch, child in self.goto[node].items():
                f = self.fail[node]
                while f and ch not in self.goto[f]:
                    f = self.fail[f]
                self.fail[child] = self.goto[f].get(ch, 0) if self.goto[f].get(ch, 0) != child else 0
                queue.append(child)
        self._blocked: dict[int, frozenset[int]] = {}
        self._index: dict = {}
        self.start = self.advance(0, " ")           # the response starts at a word start
        self.inside = self._inside(texts)           # tokens holding a whole phrase after their first character

    def _inside(self, texts: TokenTexts) -> frozenset[int]:
        """Tokens such as ' (Abilova' whose own text contains a complete phrase starting past their
        first character: blocked in every state (a match at the first character is found through
        the automaton state, like any other)."""
        return frozenset(tok for phrase in self.rest[0] for tok in texts.holding_inside(phrase))

    def __len__(self) -> int:
        return len(self.rest[0])

    @property
    def longest(self) -> int:
        """Characters in the longest phrase (its leading space included): how much of the text before a
        state decides it."""
        return max(map(len, self.rest[0]), default=0)

    def advance(self, state: int, text: str) -> int:
        for ch in text:
            while state and ch not in self.goto[state]:
                state = self.fail[state]
            state = self.goto[state].get(ch, 0)
        return state

    def advance_tokens(self, state: int, tokens: Sequence[int]) -> int:
        text = self.texts.text
        for tok in tokens:
            tok = int(tok)
            if 0 <= tok < len(text):        # ids past the tokenizer (a padded model vocabulary) have no text
                state = self.advance(state, text[tok])
        return state

    def blocked_index(self, state: int, device=None):
        """`blocked` as a cached index tensor."""
        import torch

        key = (state, str(device))
        out = self._index.get(key)
        if out is None:
            out = self._index[key] = torch.tensor(sorted(self.blocked(state)), dtype=torch.long, device=device)
        return out

    def blocked(self, state: int) -> frozenset[int]:
        """Tokens that would complete a phrase after a text in `state`."""
        out = self._blocked.get(state)
        if out is None:
            if state == 0:
                # every state's chain ends at the start state, whose rests are all the phrases
                # (30,000 at 10,000 targets): gathered once, not once per state
                found: set[int] = set(self.inside)
                for rest in self.rest[0]:
                    found.update(self.texts.starting_with(rest))
            else:
                found = set(self.blocked(0))
                node = state
                while node:
                    for rest in self.rest[node]:
                        found.update(self.texts.starting_with(rest))
                    node = self.fail[node]
            out = self._blocked[state] = frozenset(found)
        return out
