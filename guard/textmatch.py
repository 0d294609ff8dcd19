"""Forbidden phrases matched on the decoded text, whatever the token boundaries.

The token trie (trie.py) blocks the token that completes a forbidden *token sequence*. A model can
still spell a name with pieces whose last one runs past the name's end (" Ab" + "il" + "ova"
spells "Abilova", which contains "Abilo"). `TextMatcher` works on characters instead: an
Aho-Corasick automaton over the phrases (lower-cased; anything that is not a letter or digit is a
space, and every phrase starts with one, so a match begins at a word start). Its state after the
response so far knows every phrase prefix the text currently ends with; the tokens to block are
those whose text starts with the rest of such a phrase. Case variants and any token split are
covered; the blocked set is computed once per automaton state and cached. Plain Python + torch.

Byte-level vocabularies hold tokens that are only part of a character's UTF-8 bytes: "𝐊" (a
mathematical bold K) is the three bytes F0 9D 90 in one token and 8A in the next, neither of which
is text on its own. A matcher's state therefore also holds the bytes of a character begun and not
finished (`TokenTexts.continued`), packed into the same int (`TextMatcher.pack`); in such a state,
the tokens that finish the character are judged by the character they finish, so a name written in
letters of that kind is folded and matched like any other.
"""

from __future__ import annotations

import bisect
import codecs
import re
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


# the spelled view's letters: leet digits read as the letters they stand for, and "l" as "i" (a "1" is either)
_SPELLED = str.maketrans({"0": "o", "1": "i", "l": "i", "2": "z", "3": "e", "4": "a", "5": "s", "6": "g", "7": "t",
                          "8": "b", "9": "g", "q": "g"})


def spelled_form(text: str) -> str:
    """A normalised text in the spelled view: letters and digits only, leet digits read as letters."""
    return text.replace(" ", "").translate(_SPELLED)


def _gpt2_byte_chars() -> dict[str, int]:
    """Byte-level BPE's printable stand-in for each byte (GPT-2's table): printable Latin-1 bytes stand
    for themselves, the others for the code points from 256 on, in byte order."""
    kept = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in kept]
    return {**{chr(b): b for b in kept}, **{chr(256 + n): b for n, b in enumerate(others)}}


MAX_PENDING = 65536   # entries in each of a matcher's caches by state (states with a character begun are many)
_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")   # SentencePiece's byte fallback


def raw_bytes(tokenizer, texts: list[str]) -> list[bytes]:
    """Each token's bytes where a token can be part of a character: from the byte-level stand-ins, or a
    SentencePiece byte-fallback token's own byte; other tokens are whole characters (their decoded text)."""
    convert = getattr(tokenizer, "convert_ids_to_tokens", None)
    if convert is None:    # a tokenizer without token strings: every token taken as whole characters
        return [text.encode() for text in texts]
    pieces = convert(list(range(len(texts))))
    decoder = getattr(getattr(tokenizer, "backend_tokenizer", None), "decoder", None)
    if type(decoder).__name__ == "ByteLevel":
        table = _gpt2_byte_chars()
        added = set(getattr(tokenizer, "added_tokens_decoder", {}))     # plain text, not byte stand-ins
        return [bytes(table[c] for c in piece) if piece and i not in added and all(c in table for c in piece)
                else text.encode() for i, (piece, text) in enumerate(zip(pieces, texts))]
    out = []
    for piece, text in zip(pieces, texts):
        byte = _BYTE_TOKEN.fullmatch(piece or "")
        out.append(bytes([int(byte.group(1), 16)]) if byte else text.encode())
    return out


def _utf8(raw: bytes) -> tuple[str, bytes]:
    """The characters `raw` holds (an invalid byte as U+FFFD), and the bytes of a last character begun
    and not finished."""
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    return decoder.decode(raw), decoder.getstate()[0]


class TokenTexts:
    """Each token's normalised text, and the tokens whose text starts with a given string; for byte-level
    vocabularies, also each token's bytes, to read characters split over tokens (`continued`)."""

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
        raw = raw_bytes(tokenizer, texts)
        self.raw = [b"" if i in special else b for i, b in zip(ids, raw)]
        self.spaced = True
        # tokens that end inside a character (its first bytes), and those that begin with bytes that
        # only finish one (0x80-0xBF): the only ones read differently after a character begun
        self.opening = frozenset(i for i, b in enumerate(self.raw) if not b.isascii() and _utf8(b)[1])
        self.finishing = frozenset(i for i, b in enumerate(self.raw) if b and 0x80 <= b[0] <= 0xBF)

    def spelled(self) -> "TokenTexts":
        """The same vocabulary with letters and digits only (no word boundaries; `spelled_form`): the view a
        spelled-out name ("K a l o", "K-a-l-o", "K.a.l.o", "K4l0") is matched on."""
        view = object.__new__(TokenTexts)
        view._index([spelled_form(t) for t in self.text], self.cache_size)
        view.raw, view.opening, view.finishing, view.spaced = self.raw, self.opening, self.finishing, False
        return view

    def continued(self, pending: bytes, token: int) -> tuple[str, bytes]:
        """(the normalised text of the characters `token` finishes or holds after the bytes `pending` of a
        character begun, the bytes of a character it begins and leaves unfinished)."""
        text, begun = _utf8(pending + self.raw[token])
        text = normalise(text)
        return (text if self.spaced else spelled_form(text)), begun

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

    def decoded(self, tokens: Sequence[int]) -> str:
        """The normalised text of a run of tokens read together (characters split over them joined)."""
        return normalise(b"".join(self.raw[t] for t in tokens).decode("utf-8", "replace"))

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
    def __init__(self, phrases: Iterable[str], texts: TokenTexts, spelled: bool = False, anywhere: bool = False):
        """`spelled`: match the phrases' letters and digits in order whatever separates them
        ("K a l o  M i r t e n"), in leetspeak ("K4lo M1rten") or backwards ("netriM olaK"), on
        `texts.spelled()`; no word-start condition. `anywhere`: match the phrases inside words too
        ("xVorlon", "booksByVorlon"), not only where a word starts."""
        self.texts = texts
        self.goto: list[dict[str, int]] = [{}]
        self.fail: list[int] = [0]
        self.rest: list[list[str]] = [[]]          # per state: what would complete a phrase from it
        if spelled:
            forms = [spelled_form(normalise(p)) for p in phrases]
            keys = (key for form in forms if form for key in (form, form[::-1]))
        else:
            lead = "" if anywhere else " "
            keys = (lead + normalise(p).strip() for p in phrases if normalise(p).strip())
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
        self._pending: dict[int, frozenset[int]] = {}    # states with a character begun: bounded (MAX_PENDING)
        self._moves: dict[tuple[int, int], int] = {}      # (node, token) -> node: bounded (MAX_PENDING)
        self._phrases = frozenset(self.rest[0])
        self.longest = max(map(len, self.rest[0]), default=0)   # characters in the longest phrase, its space included
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
    def states(self) -> int:
        """A bound on the packed states (`pack`): automaton nodes times the codes of a character begun."""
        return len(self.goto) << 32

    def pack(self, node: int, pending: bytes = b"") -> int:
        """One int for an automaton node and the bytes (at most 3) of a character begun and not finished;
        a state without such bytes is the node itself."""
        return node + len(self.goto) * (int.from_bytes(b"\x01" + pending, "big") if pending else 0)

    def unpack(self, state: int) -> tuple[int, bytes]:
        code, node = divmod(state, len(self.goto))
        return node, (code.to_bytes(4, "big").lstrip(b"\x00")[1:] if code else b"")

    def idle(self, state: int) -> bool:
        """Whether `state` is inside no phrase: no node past a word start, no character begun."""
        return state % len(self.goto) in (0, self.start) and state < len(self.goto)

    def advance(self, state: int, text: str) -> int:
        """The state after `text` (whole characters: a character begun is dropped)."""
        node = state % len(self.goto)
        for ch in text:
            while node and ch not in self.goto[node]:
                node = self.fail[node]
            node = self.goto[node].get(ch, 0)
        return node

    def advance_tokens(self, state: int, tokens: Sequence[int]) -> int:
        texts = self.texts
        node, pending = self.unpack(state)
        for tok in tokens:
            tok = int(tok)
            if not 0 <= tok < len(texts.text):   # ids past the tokenizer (a padded model vocabulary) have no text
                continue
            if pending or tok in texts.opening:
                text, pending = texts.continued(pending, tok)
                node = self.advance(node, text)
            else:
                node = self._move(node, tok)
        return self.pack(node, pending)

    def _move(self, node: int, token: int) -> int:
        """`advance(node, the token's text)`, cached: a decode step moves every row by one token, and rows
        repeat a few (node, token) pairs (most rows stand at the start node)."""
        key = (node, token)
        out = self._moves.get(key)
        if out is None:
            if len(self._moves) >= MAX_PENDING:
                self._moves.clear()
            out = self._moves[key] = self.advance(node, self.texts.text[token])
        return out

    def blocked_index(self, state: int, device=None):
        """`blocked` as a cached index tensor."""
        import torch

        key = (state, str(device))
        out = self._index.get(key)
        if out is None:
            if len(self._index) >= MAX_PENDING:   # states with a character begun are many: bounded
                self._index.clear()
            out = self._index[key] = torch.tensor(sorted(self.blocked(state)), dtype=torch.long, device=device)
        return out

    def blocked(self, state: int) -> frozenset[int]:
        """Tokens that would complete a phrase after a text in `state`."""
        node, pending = self.unpack(state)
        if not pending:
            return self._blocked_at(node)
        out = self._pending.get(state)
        if out is None:
            if len(self._pending) >= MAX_PENDING:
                self._pending.clear()
            out = self._pending[state] = self._finishing(node, pending)
        return out

    def _finishing(self, node: int, pending: bytes) -> frozenset[int]:
        """`blocked` after the bytes `pending` of a character begun: a token that does not finish it drops them
        (the automaton stays at `node`); one that does is judged by the character it finishes and what follows."""
        finishing = self.texts.finishing
        out = set(self._blocked_at(node)).difference(finishing)
        rests, phrases = set(self._phrases), self._phrases
        at = node
        while at:
            rests.update(self.rest[at])
            at = self.fail[at]
        for tok in finishing:
            text, _ = self.texts.continued(pending, tok)
            if any(text[:k] in rests for k in range(1, len(text) + 1)) or any(
                    text[j:j + k] in phrases for j in range(1, len(text)) if text[j] == " "
                    for k in range(2, len(text) - j + 1)):
                out.add(tok)
        return frozenset(out)

    def _blocked_at(self, state: int) -> frozenset[int]:
        """Tokens that would complete a phrase after a text in automaton node `state` (no character begun)."""
        out = self._blocked.get(state)
        if out is None:
            if state == 0:
                # every state's chain ends at the start state, whose rests are all the phrases
                # (30,000 at 10,000 targets): gathered once, not once per state
                found: set[int] = set(self.inside)
                for rest in self.rest[0]:
                    found.update(self.texts.starting_with(rest))
            else:
                found = set(self._blocked_at(0))
                node = state
                while node:
                    for rest in self.rest[node]:
                        found.update(self.texts.starting_with(rest))
                    node = self.fail[node]
            out = self._blocked[state] = frozenset(found)
        return out
