"""A guard's effect on teacher-forced probabilities: "the probability this system assigns".

When a guarded system is scored (answer probability, truth ratio, forget quality, membership
inference), every teacher-forced position goes through the same `RequestGuard` that decoding
would use for that prompt: its penalty is added and the tokens it would block at that point of
the continuation are blocked. A blocked token's probability is 0; so that means and ratios of
log-probabilities stay finite, its logit (and only a blocked one's) is set to `FLOOR` below the row's best instead of -inf
(probability <= e^-60 relative to the top token, i.e. 0 to every printed digit). Plain torch.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from .decode import RequestGuard

FLOOR = 60.0


def guarded_logits(guards: Sequence[Optional[RequestGuard]], logits: torch.Tensor, owner: torch.Tensor,
                   contexts: Sequence[Sequence[int]]) -> torch.Tensor:
    """`logits[n]` as the guard of item `owner[n]` would leave them after the continuation tokens
    `contexts[n]`; rows of unguarded items (None) are returned unchanged."""
    out = logits.clone()
    guarded = []
    for n, item in enumerate(owner.tolist()):
        guard = guards[item]
        if guard is None:
            continue
        guard.apply_row(out[n], extra=contexts[n])
        guarded.append(n)
    if guarded:
        rows = torch.tensor(guarded, device=out.device)
        part = out[rows]
        floor = (part.max(dim=-1, keepdim=True).values - FLOOR).expand_as(part)
        # only what the guard withheld: a token the model itself finds that unlikely keeps its logit
        out[rows] = torch.where(torch.isneginf(part), floor, part)
    return out
