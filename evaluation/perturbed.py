"""Which perturbed answers a non-forget item's truth ratio and option probability are computed from.

The rule (every system alike, so systems stay comparable):

    A perturbed (false) answer of an item that is not a forget item (retain set, real authors, world
    facts) is left out of that item's truth ratio and option probability when it names a forget subject:
    one of the forget set's people or recurring multi-word names, or a distinctive part of one, matched
    case-insensitively at a word start (as the guard's always-on names check matches it: "Abilov" also
    finds "Abilova").

    forget subjects   the person each forget item is about (evaluation/attacks.py `subjects`) and the
                      multi-word names its questions ask about at least twice (guard.phrases
                      `group_targets`), less those the benchmark's other questions also name
    distinctive parts the words of such a name (3+ letters, not a title) that no other question uses

Why: scored through a guard (guard/scoring.py), a false answer that names a forget subject loses its
probability to the names check, which withholds the name on every request. Its truth ratio
R = P(perturbed) / P(paraphrased) falls for that reason alone, and max(0, 1 - R) (the retain-side score
in model utility) rises: the guard would be credited with utility for penalising wrong answers. Without
those answers, R compares the true answer with false answers the guard leaves alone. The records keep the
losses of every perturbed answer, the dropped ones' indices and the ratio over all of them
(`truth_ratio_all`), and a task's aggregate reports both scores where anything was dropped.

Forget items keep every perturbed answer: naming the subject is what they are about. An item all of
whose perturbed answers are dropped has no truth ratio (it leaves the mean).

Counts (this rule): `make demo` (synthetic, 6 authors, 2 forgotten): 11 of the 120 retain perturbed
answers, on 8 of the 40 items; TOFU-mini: 0 of 1800 retain, 0 of 300 real-author and 0 of 351
world-fact perturbed answers.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Sequence

from ..guard.phrases import Background, distinctive_parts, group_targets
from .attacks import subjects

DROPPED_KEY = "dropped"       # the score-request key prefix of a dropped perturbed answer ("dropped3")
KEPT_KEY = "perturbed"        # ... and of a kept one ("perturbed0")


def forget_names(forget_items: Sequence, other_questions: Sequence[str]) -> list[str]:
    """The forget subjects (names) and their distinctive parts, as the rule above defines them."""
    if not forget_items:
        return []
    background = Background([q for q in other_questions if q])
    found = {s for s in subjects(forget_items) if s}
    found |= set(group_targets([r.question or "" for r in forget_items]))
    kept = [n for n in sorted(found) if not background.mentions(n)]
    parts = [p for n in kept for p in distinctive_parts(n, background)]
    return list(dict.fromkeys(kept + parts))


@lru_cache(maxsize=1 << 12)
def _at_word_start(name: str) -> re.Pattern:
    return re.compile(r"(?<!\w)" + re.escape(name.lower()))


def names_any(text: str, names: Sequence[str]) -> bool:
    """Does `text` contain one of `names` starting at a word start (case-insensitive)?"""
    low = text.lower()
    return any(_at_word_start(n).search(low) for n in names)


def dropped_perturbed(tasks: Sequence) -> dict[tuple[int, int], tuple[int, ...]]:
    """{(task index, item index): indices of its perturbed answers left out} over the non-forget qa/options
    tasks of a benchmark; empty when nothing is dropped (or the benchmark has no forget QA set)."""
    forget = [r for t in tasks if t.role == "forget" and t.kind == "qa" for r in t.items]
    others = [(n, t) for n, t in enumerate(tasks) if t.role != "forget" and t.kind in ("qa", "options")]
    names = forget_names(forget, [r.question or "" for _, t in others for r in t.items])
    if not names:
        return {}
    out = {}
    for n, task in others:
        for i, r in enumerate(task.items):
            hit = tuple(k for k, p in enumerate(r.perturbed_answers) if names_any(p, names))
            if hit:
                out[(n, i)] = hit
    return out


def perturbed_index(key: str) -> int:
    """The answer index of a perturbed answer's score-request key ("perturbed3", "dropped3" -> 3)."""
    return int(key[len(DROPPED_KEY):] if key.startswith(DROPPED_KEY) else key[len(KEPT_KEY):])


def is_perturbed(key: str) -> bool:
    return key.startswith(KEPT_KEY) or key.startswith(DROPPED_KEY)
