"""leak@k: the chance that at least one of k sampled answers to a forget probe leaks its fact.

Per probe, n answers sampled at temperature 1 through the system's deployed generation path, c of them
judged leaks (evaluation/leakage.py `score_reply`). As pass@k (Chen et al. 2021), the unbiased estimate
from n >= k samples is

    leak@k (probe) = 1 - C(n - c, k) / C(n, k)        (1 when n - c < k)

and a curve point is its mean over the probes. A system that leaks one answer in four at temperature 1
has leak@1 = 0.25 and leak@4 = 1 - 0.75^4 ~ 0.68 (for independent samples): greedy decoding (one answer)
understates what a user who asks again gets.
"""

from __future__ import annotations

from math import comb
from typing import Sequence


def leak_at_k(n: int, c: int, k: int) -> float:
    """The unbiased leak@k of one probe from `n` samples of which `c` leaked (needs 1 <= k <= n)."""
    if not 0 <= c <= n:
        raise ValueError(f"leaks must be between 0 and the {n} samples, got {c}")
    if not 1 <= k <= n:
        raise ValueError(f"leak@{k} needs at least {k} samples, got {n}")
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def leak_curve(leaks: Sequence[Sequence[bool]], ks: Sequence[int]) -> dict[int, float]:
    """{k: mean leak@k over the probes} from each probe's judged samples (`leaks[p][s]`: sample s of probe p
    leaked); a k above a probe's sample count is left out of the curve."""
    counts = [(len(s), sum(map(bool, s))) for s in leaks if len(s)]
    out = {}
    for k in ks:
        if counts and all(n >= k for n, _ in counts):
            out[k] = sum(leak_at_k(n, c, k) for n, c in counts) / len(counts)
    return out
