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
- every name of a target that shares a forget item with a target the prompt names (a book title
  in an answer about its author): facts about the subject asked about, which calibrated mode
  imitates ignorance of like any other fact. Withholding them too put a strict residue in every
  such answer (TOFU-mini: IHL+FILA's calibrated forget quality fell from 0.92 to 0.40 with
  "Le Petit Sultan" withheld in two answers about its author).
Those are lowered with the other phrases.

With exemptions each structure of the check is a difference (union.py): a token is withheld iff it
completes a phrase of the check and no exempt phrase. That is what a check built without the
exempt phrases would withhold unless another phrase of the check ends with an exempt one (one
token then completes both), so `exempt_phrases` leaves such a phrase withheld. Plain Python.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Optional, Sequence

from .disguise import collapsed, fold


def exempt_phrases(allowed: Iterable[str], check: Iterable[str]) -> tuple[str, ...]:
    """The phrases of `allowed` (names-check phrases a request may have lowered) that are lowered:
    those that no other phrase of `check` ends with (compared on their letters and digits: "Al-Kuwaiti"
    ends "Basil Mahfouz Al-Kuwaiti")."""
    allowed = sorted(set(allowed))
    mine = {collapsed(fold(p)) for p in allowed}
    others = [c for c in {collapsed(fold(p)) for p in check} if c not in mine]
    return tuple(p for p in allowed if not any(o.endswith(collapsed(fold(p))) for o in others))


@dataclass
class Withheld:
    """The names check over one request's tokens: a trie (live set of nodes), a text matcher and
    the spelled-out matcher (optional), each beside its state."""
    trie: Any
    text: Any
    spelled: Optional[Any] = None
    live: frozenset = frozenset()
    text_state: int = -1
    spelled_state: int = -1

    def __post_init__(self):
        if self.text_state < 0:
            self.text_state = self.text.start
        if self.spelled is not None and self.spelled_state < 0:
            self.spelled_state = self.spelled.start

    def advance(self, tokens: Sequence[int]) -> None:
        for tok in tokens:
            self.live = self.trie.advance(self.live, int(tok))
        self.text_state = self.text.advance_tokens(self.text_state, tokens)
        if self.spelled is not None:
            self.spelled_state = self.spelled.advance_tokens(self.spelled_state, tokens)

    def indexes(self, device, extra: Sequence[int] = ()) -> list:
        """Index tensors of the tokens withheld next, after `extra` uncommitted tokens (drafts)."""
        live = self.live
        for tok in extra:
            live = self.trie.advance(live, int(tok))
        out = [self.trie.blocked_index(live, device),
               self.text.blocked_index(self.text.advance_tokens(self.text_state, extra), device)]
        if self.spelled is not None:
            out.append(self.spelled.blocked_index(self.spelled.advance_tokens(self.spelled_state, extra), device))
        return out
