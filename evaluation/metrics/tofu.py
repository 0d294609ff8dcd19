"""TOFU's metrics (Maini et al. 2024), as its reference code aggregates its per-item eval logs.

Per item, from teacher-forced mean token losses (TOFU's `avg_*_loss`, natural log):

    probability          P = exp(-avg_gt_loss)                       (length-normalised)
    option probability   P_true / (P_true + sum_k P_false_k)         (real authors, world facts)
    truth ratio          R = exp(avg_paraphrased_loss - mean_k avg_perturbed_loss_k)
                           = P(perturbed) / P(paraphrased), geometric means of normalised probabilities
                           (TOFU's per-item `truth_ratio` log field)

Aggregates:

    Truth Ratio (forget set)   mean(min(R, 1/R))      -- 1 when the model cannot tell true from false
    Truth Ratio (other sets)   mean(max(0, 1 - R))    -- 1 when it prefers the true answer strongly
    Forget Quality             p-value of the two-sample KS test between the forget-set R values of the
                               evaluated model and of the retain model (1/R in TOFU's code; the KS
                               statistic is the same for any monotone map applied to both samples)
    Model Utility              harmonic mean of {probability, ROUGE-L recall, truth ratio}
                               x {retain set, real authors, world facts}: 9 numbers
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def answer_probability(avg_gt_loss: float) -> float:
    return math.exp(-avg_gt_loss)


def option_probability(avg_true_loss: float, avg_false_losses: Sequence[float]) -> float:
    """Probability of the true option, normalised over the true and false options."""
    true = math.exp(-avg_true_loss)
    return true / (true + sum(math.exp(-x) for x in avg_false_losses))


def truth_ratio(avg_paraphrased_loss: float, avg_perturbed_losses: Sequence[float]) -> float:
    """R = P(perturbed) / P(paraphrased): below 1 when the model prefers the true (paraphrased) answer."""
    return math.exp(avg_paraphrased_loss - float(np.mean(avg_perturbed_losses)))


def forget_truth_ratio_score(ratios: Sequence[float]) -> float:
    """mean(min(R, 1/R)) over the forget set."""
    r = np.asarray(ratios, dtype=float)
    return float(np.mean(np.minimum(r, 1.0 / r)))


def retain_truth_ratio_score(ratios: Sequence[float]) -> float:
    """mean(max(0, 1 - R)) over a retain / utility set."""
    r = np.asarray(ratios, dtype=float)
    return float(np.mean(np.maximum(0.0, 1.0 - r)))


def harmonic_mean(values: Sequence[float]) -> float:
    """Harmonic mean; 0 if any value is 0 (the limit), NaN for an empty list or a negative value."""
    v = np.asarray(values, dtype=float)
    if v.size == 0 or np.any(np.isnan(v)) or np.any(v < 0):
        return float("nan")
    if np.any(v == 0):
        return 0.0
    return float(v.size / np.sum(1.0 / v))


def forget_quality(unlearned_ratios: Sequence[float], retain_ratios: Sequence[float]) -> dict:
    """{'forget_quality': KS p-value, 'ks_statistic': D} of the two forget-set truth-ratio samples."""
    from scipy.stats import ks_2samp

    a = np.asarray(unlearned_ratios, dtype=float)
    b = np.asarray(retain_ratios, dtype=float)
    if a.size == 0 or b.size == 0:
        raise ValueError("forget quality needs truth ratios from both the evaluated and the retain model")
    res = ks_2samp(a, b)
    return {"forget_quality": float(res.pvalue), "ks_statistic": float(res.statistic)}


def truth_ratio_profile(ratios: Sequence[float]) -> dict:
    """Where a set of truth ratios sits, to read forget quality by: the median R, its quartiles and
    the share of items whose false (perturbed) answers are preferred (R > 1). A model that never
    learnt the facts sits near R = 1 on both sides; one pushed to prefer false answers (R >> 1)
    is as distinguishable from the retain model by the KS test as one that still knows them."""
    r = np.asarray(ratios, dtype=float)
    if r.size == 0:
        raise ValueError("a truth-ratio profile needs at least one ratio")
    q1, med, q3 = np.quantile(r, [0.25, 0.5, 0.75])
    return {"median": float(med), "q1": float(q1), "q3": float(q3), "prefers_false": float(np.mean(r > 1.0)),
            "n": int(r.size)}


UTILITY_COMPONENTS = [(task, metric) for task in ("retain", "real_authors", "world_facts")
                      for metric in ("probability", "rougeL_recall", "truth_ratio")]


def model_utility(aggregates: dict[str, dict[str, float]]) -> dict:
    """Harmonic mean of the available utility components; says which ones it used."""
    used = {f"{t}.{m}": aggregates[t][m] for t, m in UTILITY_COMPONENTS
            if t in aggregates and aggregates[t].get(m) is not None}
    return {"model_utility": harmonic_mean(list(used.values())) if used else None, "components": used}
