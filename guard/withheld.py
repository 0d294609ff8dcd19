"""What a calibrated guard still withholds: the targets' names a request did not write itself.

Calibrated mode (calibrate.py) imitates a model that never learnt its targets: their phrases lose
a fitted soft mask instead of being withheld. That imitation stops at the names. A model that never
learnt an author can repeat the name a client wrote, but cannot produce it unprompted, so a name
the client did not give is a disclosure however it is reached ("Who is the author born in Kuwait
City on 08/09/1956?", a name asked for in disguise, by its first word, or read off a log-probability
field). A calibrated request therefore keeps strict mode's names check (every distinctive target's
name and distinctive parts, the full names spelled out letter by letter) withheld, except
- the phrases its own prompt spells out (read through the classifier's lexical views,
  `classifier.spelled_out`): a never-learnt model echoes them;
- every name of a target that shares a forget item with a target the prompt names and has at most
  half as many forget items (a book title in an answer about its author, not the author when the
  prompt names the book): facts about the subject asked about, which calibrated mode imitates
  ignorance of like any other fact. Withholding them too put a strict residue in every
  such answer (TOFU-mini: IHL+FILA's calibrated forget quality fell from 0.92 to 0.40 with
  "Le Petit Sultan" withheld in two answers about its author).
Those are lowered with the other phrases.

With exemptions each structure of the check is a difference (union.py): a token is withheld iff it
completes a phrase of the check and no exempt phrase. That is what a check built without the
exempt phrases would withhold unless one token completes an exempt phrase and another one: where
another phrase ends with an exempt one, `CheckPhrases.exempt` leaves the exempt one withheld; where
another runs on past an exempt one's end (contains it, or starts with its last OVERLAP+ letters:
"Bergman" after "Anna Berg"), `CheckPhrases.overlapping` lists it and it is withheld beside the
difference. Not covered: a single token holding the end of an exempt phrase and all of another
name that shares fewer letters with it. Plain Python.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from .disguise import collapsed, fold


OVERLAP = 3   # letters an exempt phrase's end must share with the start of another name to count as overlapping


class CheckPhrases:
    """The names check's phrases, each also as its letters and digits (collapsed once, at start-up)."""

    def __init__(self, phrases: Iterable[str]):
        self.letters = {p: collapsed(fold(p)) for p in dict.fromkeys(phrases)}

    def __contains__(self, phrase: str) -> bool:
        return phrase in self.letters

    def exempt(self, allowed: Iterable[str]) -> tuple[str, ...]:
        """The phrases of `allowed` (names-check phrases a request may have lowered) that are lowered:
        those that no other phrase of the check ends with (compared on their letters and digits:
        "Al-Kuwaiti" ends "Basil Mahfouz Al-Kuwaiti"; one token would complete both)."""
        allowed = sorted(set(allowed))
        mine = {self.letters.get(p, collapsed(fold(p))) for p in allowed}
        others = [c for c in set(self.letters.values()) if c not in mine]
        return tuple(p for p in allowed if not any(o.endswith(self.letters.get(p, collapsed(fold(p)))) for o in others))

    def overlapping(self, exempt: Sequence[str]) -> list[str]:
        """The other phrases that one token could complete together with an exempt one, past its end:
        those that contain an exempt phrase's letters, or start with the last OVERLAP or more letters
        of one ("Bergman" after an exempt "Anna Berg"). Withheld whatever the difference lets through."""
        mine = {self.letters.get(p, collapsed(fold(p))) for p in exempt}
        tails = {m[-k:] for m in mine for k in range(OVERLAP, len(m) + 1)}
        return [p for p, c in self.letters.items() if c not in mine
                and (any(m in c for m in mine) or any(c[:k] in tails for k in range(OVERLAP, len(c) + 1)))]


@dataclass
class Withheld:
    """The names check over one request's tokens: a trie (its live set of nodes) and text matchers
    (the names, the full names spelled out, the overlapping names: see above), each beside its state."""
    trie: Any
    matchers: list
    live: frozenset = frozenset()
    states: list = field(default_factory=list)

    def __post_init__(self):
        self.matchers = [m for m in self.matchers if m is not None]
        self.states = self.states or [m.start for m in self.matchers]

    def fresh(self) -> "Withheld":
        """The same structures at their start states (one per request; the structures are shared)."""
        return Withheld(self.trie, list(self.matchers))

    def advance(self, tokens: Sequence[int]) -> None:
        for tok in tokens:
            self.live = self.trie.advance(self.live, int(tok))
        self.states = [m.advance_tokens(s, tokens) for m, s in zip(self.matchers, self.states)]

    def indexes(self, device, extra: Sequence[int] = ()) -> list:
        """Index tensors of the tokens withheld next, after `extra` uncommitted tokens (drafts)."""
        live = self.live
        for tok in extra:
            live = self.trie.advance(live, int(tok))
        return [self.trie.blocked_index(live, device)] + [
            m.blocked_index(m.advance_tokens(s, extra) if extra else s, device) for m, s in zip(self.matchers, self.states)]
