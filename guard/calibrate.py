"""Calibrated mode: how hard a guard discourages a forget fact, fitted so the guarded model imitates
one that never learnt the facts (TOFU's forget quality) instead of one pushed to deny them.

A strict guard withholds every token that completes a forbidden phrase, so the true answer's
probability drops to zero while the counterfactual (perturbed) answers, which lack those phrases,
keep theirs: the guarded model prefers the false answers (truth ratio R >> 1), as far from a model
that never saw the facts as the target is on the other side. Calibrated mode lowers those tokens'
logits by a fixed `s` instead; `s` is fitted on part of the forget set so that the median

    R(s) = P_s(perturbed)^(1/|perturbed|) / P_s(paraphrased)^(1/|paraphrased|)

(TOFU's truth ratio, through the guard exactly as served) reaches the model's *own* median truth
ratio on counterfactual items it never learnt (`calibration_reference`, e.g. TOFU's retain_perturbed
authors for a target fine-tuned on others), or without a reference `calibration_ratio` (1: the true
answer is no more likely than a false one). Needs no retain model, only counterfactual answers.
Why the median and not the whole distribution: fitting the KS distance to the reference on 20 items
was tried and is too noisy (distances of 0.100-0.125 there spanned forget quality 0.27-0.92 on the
40 TOFU-mini forget items); the median of the fitted items moves smoothly with the mask.
Steps as in training/fila.py: a statistics pass (median R at a given s, the target model
teacher-forced through the guard), pure maths (bisection on s), an apply step (the fitted s and
its figures in policy.json). The statistics pass measures, so it lives with the measuring path:
evaluation/calibration.py `RatioProbe` (any object with its `requests`, `runtime`, `ratios` and
`ratios_at` serves `calibrate_soft_mask`); guard/build.py takes it as `build_policy(..., probe=)`,
and evaluation/calibration.py `build_policy` passes it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from ..data.records import QA
from .policy import MAX_SOFT_MASK, GuardConfig, PolicyError

STEPS = 12          # bisection steps on log(1 + s): s to within ~2% of [0, MAX_SOFT_MASK]
FIT_VERSION = 6         # bumped when a calibrated build changes (2: median to the reference's; 3: a fixed mask keeps
                        # the semantic penalty like a fitted one; 4: names the prompt did not write stay withheld,
                        # withheld.py; 5: names of targets sharing an item with a named one lowered; 6: only those with at most
                        # half its items, and names running on past an exempt one withheld), so build caches do
                        # not reuse older policies
REFERENCE_ITEMS = 400   # never-learnt items scored for the reference median (evenly spaced)


@dataclass(frozen=True)
class Fit:
    soft_mask: float
    median_ratio: float          # on the calibration items, at soft_mask
    median_ratio_unguarded: float
    median_ratio_strict: float
    reached: bool
    reference_median: float | None = None   # the model's own median truth ratio on facts it never learnt
    reference_ks: float | None = None       # KS distance of the fitted items' ratios to those, at soft_mask
    semantic_penalty: bool = False          # the policy's semantic penalty kept under the mask (the fit chose it)


def calibration_split(forget: Sequence[QA], fraction: float) -> tuple[list[int], list[int]]:
    """(fitted, held out) item indices: evenly spaced, so each part spans every subject."""
    n = len(forget)
    k = max(1, min(n, round(fraction * n)))
    fitted = sorted({int(i * n / k) for i in range(k)})
    return fitted, [i for i in range(n) if i not in set(fitted)]


def check_counterfactuals(items: Sequence[QA], what: str = "the forget set") -> None:
    missing = [n for n, r in enumerate(items)
               if not (r.paraphrased_answer is not None and r.perturbed_answers)]
    if not items or missing:
        raise PolicyError(f"mode: calibrated fits the guard on paraphrased and perturbed (counterfactual) answers; "
                          f"{len(missing)} of {len(items)} items of {what} have none"
                          f"{f' (e.g. item {missing[0]})' if missing else ''}. Use a set that has them "
                          f"(e.g. tofu/forget01_perturbed, tofu/retain_perturbed) or mode: strict")


# ------------------------------------------------------------------ statistics pass
@dataclass
class TokenStats:
    """Per scored token, through the guard with the soft mask at 0: its log-probability, the
    log-sum-exp of the row's logits over the tokens the policy matches there (`matched_lse`, -inf
    when none) and over the others (`other_lse`), and whether the token itself is matched. Any
    soft mask s then gives  log p_s = logp0 + log(e^other + e^matched) - s*is_matched
    - log(e^other + e^(matched - s))  with no further model pass."""

    logp0: np.ndarray
    other_lse: np.ndarray
    matched_lse: np.ndarray
    is_matched: np.ndarray

    def logp(self, soft: float) -> np.ndarray:
        both = np.logaddexp(self.other_lse, self.matched_lse)
        return self.logp0 + both - soft * self.is_matched - np.logaddexp(self.other_lse, self.matched_lse - soft)


class Probe(Protocol):
    """Truth ratios of some forget items through the guard: what `calibrate_soft_mask` reads
    (evaluation/calibration.py `RatioProbe` is the one implementation)."""

    requests: Sequence
    runtime: Any

    def ratios(self, soft_mask: float | None, guarded: bool = True, penalty: bool = False) -> list[float]: ...

    def ratios_at(self, soft_mask: float, penalty: bool = False) -> list[float]: ...


# ------------------------------------------------------------------ pure maths
def fit_soft_mask(median_at: Callable[[float], float], target: float, steps: int = STEPS,
                  top: float = MAX_SOFT_MASK) -> tuple[float, float, bool]:
    """Smallest s in [0, top] with median_at(s) >= target, by bisection on log(1 + s) (the median
    truth ratio grows with s). Returns (s, median_at(s), reached)."""
    low = median_at(0.0)
    if low >= target:
        return 0.0, low, True
    high = median_at(top)
    if high < target:
        return top, high, False
    a, b, at_b = 0.0, math.log1p(top), high
    for _ in range(steps):
        mid = (a + b) / 2
        value = median_at(math.expm1(mid))
        if value >= target:
            b, at_b = mid, value
        else:
            a = mid
    return math.expm1(b), at_b, True


def ks_distance(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the empirical CDFs."""
    a, b = np.sort(np.asarray(a, float)), np.sort(np.asarray(b, float))
    points = np.concatenate([a, b])
    return float(np.max(np.abs(np.searchsorted(a, points, "right") / a.size - np.searchsorted(b, points, "right") / b.size)))


# ------------------------------------------------------------------ apply step
def calibrate_soft_mask(probe: Probe, cfg: GuardConfig, progress=print,
                        reference: Sequence[float] | None = None) -> Fit:
    """The soft mask for `cfg` (its fixed `soft_mask`, or fitted), with the figures that justify it.
    `reference`: the model's own truth ratios on counterfactual items it never learnt (the target a
    model that never saw the forget facts would show); without it, the median ratio `cfg.ratio`."""
    fast = lambda s: float(np.median(probe.ratios_at(s)))   # noqa: E731
    unguarded = float(np.median(probe.ratios(None, guarded=False)))
    strict = float(np.median(probe.ratios(None)))
    goal = f"the model's own ratios on {len(reference)} never-learnt items (median {np.median(reference):.3f})" \
        if reference is not None else f"median {cfg.ratio}"
    progress(f"calibrating the soft mask on {len(probe.requests)} forget items: median truth ratio "
             f"{unguarded:.3f} unguarded, {strict:.3g} strict; target: {goal}")
    if cfg.soft_mask is not None:   # a fixed mask, over the semantic penalty as a fitted one is (unless dropped)
        penalty = _keeps_penalty(probe, cfg)
        served = float(np.median(probe.ratios(cfg.soft_mask, penalty=penalty)))
        return Fit(cfg.soft_mask, served, unguarded, strict, True, semantic_penalty=penalty)
    if reference is not None:
        return _fit_to_reference(probe, cfg, reference, unguarded, strict, progress)
    s, value, reached = fit_soft_mask(fast, cfg.ratio)
    if not reached:
        raise PolicyError(f"mode: calibrated cannot reach a median truth ratio of {cfg.ratio} on the "
                          f"calibration items: {unguarded:.3f} unguarded, {value:.3f} at the largest soft mask "
                          f"({MAX_SOFT_MASK} logits), {strict:.3g} strict. Lower calibration_ratio, or use mode: strict")
    served = float(np.median(probe.ratios(s)))    # what decoding and `unlearn eval` will see
    progress(f"soft mask {s:.3f} logits: median truth ratio {served:.3f} (fitted {value:.3f})")
    return Fit(s, served, unguarded, strict, True)


def _keeps_penalty(probe: Probe, cfg: GuardConfig) -> bool:
    """Whether the mask goes over the policy's semantic penalty: unless the config drops it or there is none."""
    return cfg.keeps_penalty and probe.runtime.policy.config.penalty > 0


def _fit_to_reference(probe: Probe, cfg: GuardConfig, reference: Sequence[float], unguarded: float,
                      strict: float, progress) -> Fit:
    """The smallest mask at which the fitted items' median truth ratio reaches the reference's (the
    model's own median on facts it never learnt), over the policy's semantic penalty unless the config
    drops it. Where the model alone already reaches it (an unlearnt checkpoint), mask 0 and no penalty:
    the guard has nothing to add to the ratios."""
    goal = float(np.median(reference))
    if unguarded >= goal:
        s, penalty = 0.0, False
    else:
        penalty = _keeps_penalty(probe, cfg)
        s, value, reached = fit_soft_mask(lambda m: float(np.median(probe.ratios_at(m, penalty))), goal)
        if not reached:
            raise PolicyError(f"mode: calibrated cannot reach the reference's median truth ratio {goal:.3f} on the "
                              f"calibration items: {unguarded:.3f} unguarded, {value:.3f} at the largest soft mask "
                              f"({MAX_SOFT_MASK} logits), {strict:.3g} strict. Use mode: strict")
    served = probe.ratios(s, penalty=penalty)
    distance = ks_distance(served, reference)
    progress(f"soft mask {s:.3f} logits{' over the semantic penalty' if penalty else ''}: median truth ratio "
             f"{np.median(served):.3f} (reference {goal:.3f}), KS distance to the reference {distance:.3f}")
    return Fit(s, float(np.median(served)), unguarded, strict, True, goal, distance, penalty)


def calibration_record(fit: Fit, fitted: list[int], held_out: list[int], held_out_median: float | None) -> dict:
    out = {"soft_mask": fit.soft_mask, "fitted_items": fitted, "median_truth_ratio": fit.median_ratio,
           "median_truth_ratio_unguarded": fit.median_ratio_unguarded,
           "median_truth_ratio_strict": fit.median_ratio_strict, "held_out_median_truth_ratio": held_out_median}
    if fit.reference_median is not None:
        out.update(reference_median_truth_ratio=fit.reference_median, reference_ks_distance=fit.reference_ks)
    out["semantic_penalty"] = fit.semantic_penalty
    return out


def reference_items(items: Sequence[QA], forget: Sequence[QA], limit: int = REFERENCE_ITEMS) -> list[QA]:
    """At most `limit` reference items (evenly spaced), none of them a forget question."""
    asked = {r.question for r in forget}
    overlap = [r.question for r in items if r.question in asked]
    if overlap:
        raise PolicyError(f"calibration_reference must hold facts the model never learnt; {len(overlap)} of its "
                          f"items are forget questions (e.g. {overlap[0]!r})")
    check_counterfactuals(items, "calibration_reference")
    if len(items) > limit:
        items = [items[int(i * len(items) / limit)] for i in range(limit)]
    return list(items)
