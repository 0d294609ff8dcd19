"""Membership-inference attacks: one score per text, as a loss (higher = less likely a training member).

Per text x = (x_1..x_n), from teacher-forced token log-probabilities lp_t = log p(x_t | x_<t):

    LOSS        -mean_t lp_t                                          (Yeom et al. 2018)
    ZLib        LOSS / len(zlib(x))  (zlib-compressed bytes of the text: its generic entropy)
                                                                      (Carlini et al. 2021)
    Min-K%      -mean of the lowest k% of lp_t                        (Shi et al. 2024; memorization.py)
    Min-K%++    -mean of the lowest k% of z_t = (lp_t - mu_t) / sigma_t, mu_t and sigma_t the mean and
                standard deviation of log p(v | x_<t) over v ~ p(. | x_<t), the model's next-token
                distribution at that position                          (Zhang et al. 2024)
    reference   LOSS(model) - LOSS(reference model), the retain (or base) model as reference: what the
                model finds likelier than a model that never saw the text  (Carlini et al. 2021/2022)
    GradNorm    mean over parameter tensors of ||d LOSS / d theta||_2: a trained-on text sits where
                the loss is flat (Wang et al. 2024)

AUC and PrivLeak per attack as MUSE computes them (memorization.py `mia_auc`, `privleak`): forget
texts the positive class, the score as given (~0: the model's forget texts are told apart as members;
~0.5: no better than chance); PrivLeak = (AUC_system - AUC_retain) / AUC_retain * 100.

What a runtime guard can move (GUARD_MOVES): the scores are computed as the system assigns probabilities
(evaluation/systems.py `score`; a guarded system through guard/scoring.py, its mask and penalty applied).
LOSS, ZLib, Min-K% and Min-K%++ read those log-probabilities, so a guard moves them on the texts it
guards. The reference attack subtracts an unguarded reference model's loss from the system's loss, so the
guard moves its system side as well (and a text whose loss the guard alone raises is one it guards: a
reference equal to the guard's own base model reads the guard's effect straight off). GradNorm needs the
weights and differentiates the model's own loss: the guard is no part of the weights, it cannot move it;
for a guarded system it is the base checkpoint's.
"""

from __future__ import annotations

import zlib
from typing import Sequence

import numpy as np

from .memorization import min_k_score

# attack -> whether a runtime guard (teacher forcing through guard/scoring.py) can move its score
GUARD_MOVES = {"loss": True, "zlib": True, "min_k": True, "min_k_pp": True, "reference": True, "gradnorm": False}


def loss_score(logprobs: Sequence[float]) -> float:
    """LOSS: the mean negative log-likelihood per token; NaN for an empty text."""
    return float(-np.mean(logprobs)) if len(logprobs) else float("nan")


def zlib_score(logprobs: Sequence[float], text: str) -> float:
    """ZLib: LOSS divided by the length in bytes of the zlib-compressed text."""
    size = len(zlib.compress(text.encode("utf-8")))
    return loss_score(logprobs) / size if size else float("nan")


def min_k_plus_plus_score(logprobs: Sequence[float], means: Sequence[float], stds: Sequence[float],
                          k: float = 0.4) -> float:
    """Min-K%++: Min-K% over each token's log-probability standardised by its position's next-token
    distribution, z_t = (lp_t - mu_t) / sigma_t (sigma_t = 0, a certain position: z_t = 0)."""
    lp, mu, sd = (np.asarray(v, dtype=float) for v in (logprobs, means, stds))
    if not (lp.shape == mu.shape == sd.shape):
        raise ValueError("Min-K%++ needs a mean and a standard deviation for every token")
    z = np.divide(lp - mu, sd, out=np.zeros_like(lp), where=sd > 0)
    return min_k_score(z.tolist(), k)


def reference_score(loss: float, reference_loss: float) -> float:
    """Reference: the model's LOSS less the reference model's on the same text."""
    return loss - reference_loss


def gradnorm_score(gradient_norms: Sequence[float]) -> float:
    """GradNorm: the mean of the per-parameter-tensor L2 norms of the gradient of the text's LOSS."""
    return float(np.mean(gradient_norms)) if len(gradient_norms) else float("nan")


def reference_scores(losses: Sequence[float], reference_losses: Sequence[float]) -> list[float]:
    """Per text, `reference_score` of paired losses (the same texts in the same order)."""
    if len(losses) != len(reference_losses):
        raise ValueError(f"reference attack: {len(losses)} losses against {len(reference_losses)} reference losses")
    return [reference_score(a, b) for a, b in zip(losses, reference_losses)]
