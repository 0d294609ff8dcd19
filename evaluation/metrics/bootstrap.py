"""Spread from one run: percentile bootstrap intervals of forget quality and model utility over items.

TOFU's headline numbers come from one evaluation of one checkpoint on a few dozen forget items, so a
difference between two systems can be the items' luck. Resampling the items answers "how far would the
number move with another sample of questions like these" (the spread of the measurement, not of the
training seed: seeds need separate runs).

    resample b = 1..B:   draw n item indices with replacement, recompute the number from those items
    interval             the (1-level)/2 and (1+level)/2 quantiles of the B recomputed numbers

Forget quality: the KS p-value of the system's forget truth ratios against the retain model's. When both
hold the same items in the same order (the same forget set), one draw of indices picks the same items on
both sides (paired); otherwise each side is resampled on its own.
Model utility: each utility set (retain, real authors, world facts) resampled on its own, its three
aggregates recomputed as `evaluation/scoring.py` `aggregate` does (mean probability, mean ROUGE-L recall,
mean(max(0, 1-R))), then their harmonic mean.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from .tofu import UTILITY_COMPONENTS, harmonic_mean, retain_truth_ratio_score

N_RESAMPLES = 1000
LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    low: float
    high: float
    level: float = LEVEL
    resamples: int = N_RESAMPLES

    def to_json(self) -> dict:
        return {"low": self.low, "high": self.high, "level": self.level, "resamples": self.resamples,
                "method": "percentile bootstrap over items (one run)"}

    @classmethod
    def from_json(cls, d) -> Optional["Interval"]:
        """The interval `to_json` wrote; None for anything else (a result measured without one)."""
        if not isinstance(d, dict) or d.get("low") is None or d.get("high") is None:
            return None
        return cls(d["low"], d["high"], d.get("level", LEVEL), d.get("resamples", N_RESAMPLES))


def _interval(values: Sequence[float], level: float) -> Optional[Interval]:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if v.size == 0:
        return None
    low, high = np.quantile(v, [(1 - level) / 2, (1 + level) / 2])
    return Interval(float(low), float(high), level, len(values))


def forget_quality_interval(mine: Sequence[float], reference: Sequence[float], resamples: int = N_RESAMPLES,
                            level: float = LEVEL, seed: int = 0) -> Optional[Interval]:
    """Bootstrap interval of the KS p-value between `mine` and `reference` (truth ratios)."""
    from scipy.stats import ks_2samp

    a, b = np.asarray(mine, dtype=float), np.asarray(reference, dtype=float)
    if a.size == 0 or b.size == 0:
        return None
    rng = np.random.default_rng(seed)
    paired = a.size == b.size
    values = []
    for _ in range(resamples):
        ia = rng.integers(0, a.size, a.size)
        ib = ia if paired else rng.integers(0, b.size, b.size)
        values.append(float(ks_2samp(a[ia], b[ib]).pvalue))
    return _interval(values, level)


def _column(items: Sequence, key: str) -> np.ndarray:
    """One per-item metric of the records (results.py) as floats, NaN where an item lacks it (skipped by
    the means, as finite_mean does)."""
    return np.asarray([np.nan if getattr(it, key, None) is None else getattr(it, key) for it in items], dtype=float)


def _set_components(items: Sequence, idx: np.ndarray) -> dict[str, float]:
    """The utility aggregates of one set recomputed on the items `idx` (one resample)."""
    out = {}
    for metric in ("probability", "rougeL_recall"):
        col = _column(items, metric)[idx]
        if np.isfinite(col).any():
            out[metric] = float(np.nanmean(col))
    tr = _column(items, "truth_ratio")[idx]
    tr = tr[np.isfinite(tr)]
    if tr.size:
        out["truth_ratio"] = retain_truth_ratio_score(tr)
    return out


def model_utility_interval(task_items: dict[str, Sequence], components: Sequence[str],
                           resamples: int = N_RESAMPLES, level: float = LEVEL, seed: int = 0) -> Optional[Interval]:
    """Bootstrap interval of model utility: `task_items` maps a utility set's name to its per-item records,
    `components` names the `set.metric` components the point estimate used (model_utility's 'components')."""
    sets = sorted({c.split(".")[0] for c in components if c.split(".")[0] in task_items and task_items[c.split(".")[0]]})
    if not sets:
        return None
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        comp: dict[str, float] = {}
        for name in sets:
            n = len(task_items[name])
            for metric, v in _set_components(task_items[name], rng.integers(0, n, n)).items():
                comp[f"{name}.{metric}"] = v
        values.append(harmonic_mean([comp[c] for c in components if c in comp]))
    return _interval(values, level)


def utility_sets() -> list[str]:
    """The sets model utility is computed over (in TOFU's order)."""
    return list(dict.fromkeys(t for t, _ in UTILITY_COMPONENTS))
