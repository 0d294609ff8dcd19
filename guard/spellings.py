"""Every way a vocabulary can spell a string, not only the tokenizer's own split.

A model is free to emit " Ab" + "ilov" or " Abil" + "ov": both decode to " Abilov". A trie of the
tokenizer's canonical ids alone would let the second through. `Spellings` indexes the vocabulary
by decoded surface text and enumerates the token sequences whose concatenation is exactly the
string (longest pieces first, at most `limit` of them), so the forbidden-sequence trie can block
all of them.
"""

from __future__ import annotations


class Spellings:
    def __init__(self, tokenizer):
        special = set(tokenizer.all_special_ids)
        ids = [i for i in range(len(tokenizer)) if i not in special]
        texts = tokenizer.batch_decode([[i] for i in ids])
        self.by_text: dict[str, list[int]] = {}
        for i, text in zip(ids, texts):
            if text and "\ufffd" not in text:           # skip byte fragments of multi-byte characters
                self.by_text.setdefault(text, []).append(i)
        self.longest = max(map(len, self.by_text), default=1)

    def __call__(self, text: str, limit: int = 64) -> list[list[int]]:
        out: list[list[int]] = []

        def extend(pos: int, acc: list[int]) -> None:
            if len(out) >= limit:
                return
            if pos == len(text):
                out.append(acc)
                return
            for length in range(min(self.longest, len(text) - pos), 0, -1):
                for tok in self.by_text.get(text[pos:pos + length], ()):
                    extend(pos + length, acc + [tok])

        extend(0, [])
        return out
