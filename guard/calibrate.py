"""Calibrated mode: how hard a guard discourages a forget fact, fitted so the guarded model imitates
one that never learnt the facts (TOFU's forget quality) instead of one pushed to deny them.

A strict guard withholds every token that completes a forbidden phrase, so the true answer's
probability drops to zero while the counterfactual (perturbed) answers, which lack those phrases,
keep theirs: the guarded model prefers the false answers (truth ratio R >> 1), as far from a model
that never saw the facts as the target is on the other side. Calibrated mode lowers those tokens'
logits by a fixed `s` instead; `s` is fitted on part of the forget set so that the median

    R(s) = P_s(perturbed)^(1/|perturbed|) / P_s(paraphrased)^(1/|paraphrased|)

(TOFU's truth ratio, through the guard exactly as served) reaches `calibration_ratio` (1: the true
answer is no more likely than a false one). Needs no retain model, only the forget items' own
counterfactual answers. Steps as in training/fila.py: a statistics pass (median R at a given s, the
target model teacher-forced through the guard), pure maths (bisection on s), an apply step (the
fitted s and its figures in policy.json).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from ..data.records import QA
from ..evaluation.benchmarks import Task
from ..evaluation.config import EvalConfig
from ..evaluation.metrics import tofu as TOFU
from ..evaluation.scoring import build_requests
from ..evaluation.teacher_forcing import score_continuations
from .policy import MAX_SOFT_MASK, GuardConfig, PolicyError
from .runtime import GuardRuntime
from .scoring import guarded_logits

STEPS = 12          # bisection steps on log(1 + s): s to within ~2% of [0, MAX_SOFT_MASK]


@dataclass(frozen=True)
class Fit:
    soft_mask: float
    median_ratio: float          # on the calibration items, at soft_mask
    median_ratio_unguarded: float
    median_ratio_strict: float
    reached: bool


def calibration_split(forget: Sequence[QA], fraction: float) -> tuple[list[int], list[int]]:
    """(fitted, held out) item indices: evenly spaced, so each part spans every subject."""
    n = len(forget)
    k = max(1, min(n, round(fraction * n)))
    fitted = sorted({int(i * n / k) for i in range(k)})
    return fitted, [i for i in range(n) if i not in set(fitted)]


def check_counterfactuals(forget: Sequence[QA]) -> None:
    missing = [n for n, r in enumerate(forget)
               if not (isinstance(r.extra.get("paraphrased_answer"), str) and r.extra.get("perturbed_answer"))]
    if missing:
        raise PolicyError(f"mode: calibrated fits the guard on each forget item's paraphrased and perturbed "
                          f"(counterfactual) answers; {len(missing)} of {len(forget)} items have none "
                          f"(e.g. item {missing[0]}). Use a set that has them (e.g. tofu/forget01_perturbed) "
                          f"or mode: strict")


# ------------------------------------------------------------------ statistics pass
class RatioProbe:
    """Truth ratios of `items` under the guard at any soft-mask strength: prompts and continuations
    built once, exactly as `unlearn eval` builds them; each call one teacher-forced pass."""

    def __init__(self, model, tokenizer, runtime: GuardRuntime, items: Sequence[QA]):
        self.model, self.runtime = model, runtime
        task = Task("calibration", "qa", list(items), "calibration", "forget")
        self.requests = build_requests([task], tokenizer, EvalConfig(metrics=["truth_ratio"])).tf

    def ratios(self, soft_mask: float | None, guarded: bool = True) -> list[float]:
        """None: strict (withheld); guarded=False: the model alone."""
        prefixes = [r[2] for r in self.requests]
        transform = None
        if guarded:
            self.runtime.soft_mask = soft_mask
            guards = self.runtime.guards([(p, None) for p in prefixes])
            transform = lambda logits, owner, contexts: guarded_logits(guards, logits, owner, contexts)  # noqa: E731
        scored = score_continuations(self.model, prefixes, [r[3] for r in self.requests], transform_logits=transform)
        out = []
        for (_, _, _, _, keys), s in zip(self.requests, scored):
            by = dict(zip(keys, s))
            perturbed = [by[k].avg_loss for k in keys if k.startswith("perturbed")]
            out.append(TOFU.truth_ratio(by["paraphrased"].avg_loss, perturbed))
        return out


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


# ------------------------------------------------------------------ apply step
def calibrate_soft_mask(probe: RatioProbe, cfg: GuardConfig, progress=print) -> Fit:
    """The soft mask for `cfg` (its fixed `soft_mask`, or fitted), with the figures that justify it."""
    median = lambda s: float(np.median(probe.ratios(s)))   # noqa: E731
    unguarded = float(np.median(probe.ratios(None, guarded=False)))
    strict = median(None)
    progress(f"calibrating the soft mask on {len(probe.requests)} forget items: median truth ratio "
             f"{unguarded:.3f} unguarded, {strict:.3g} strict, target {cfg.ratio}")
    if cfg.soft_mask is not None:
        return Fit(cfg.soft_mask, median(cfg.soft_mask), unguarded, strict, True)
    s, value, reached = fit_soft_mask(median, cfg.ratio)
    if not reached:
        raise PolicyError(f"mode: calibrated cannot reach a median truth ratio of {cfg.ratio} on the "
                          f"calibration items: {unguarded:.3f} unguarded, {value:.3f} at the largest soft mask "
                          f"({MAX_SOFT_MASK} logits), {strict:.3g} strict. Lower calibration_ratio, or use mode: strict")
    progress(f"soft mask {s:.3f} logits: median truth ratio {value:.3f}")
    return Fit(s, value, unguarded, strict, True)


def calibration_record(fit: Fit, fitted: list[int], held_out: list[int], held_out_median: float | None) -> dict:
    return {"soft_mask": fit.soft_mask, "fitted_items": fitted, "median_truth_ratio": fit.median_ratio,
            "median_truth_ratio_unguarded": fit.median_ratio_unguarded,
            "median_truth_ratio_strict": fit.median_ratio_strict, "held_out_median_truth_ratio": held_out_median}
