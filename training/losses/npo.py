"""Negative Preference Optimisation (Zhang et al. 2024).

    L_NPO = -(2/beta) * E[ log sigmoid( -beta * (log pi_theta(y|x) - log pi_ref(y|x)) ) ]

with log pi(y|x) the sum of answer-token log-probs and pi_ref the frozen initial model.
As beta -> 0 it tends to gradient ascent; the sigmoid bounds how far each example is pushed.
"""

import torch
import torch.nn.functional as F

from .common import sequence_logprob


def npo_loss(
    logits: torch.Tensor, labels: torch.Tensor, ref_logits: torch.Tensor, beta: float = 0.1
) -> torch.Tensor:
    logp, _ = sequence_logprob(logits, labels)
    with torch.no_grad():
        ref_logp, _ = sequence_logprob(ref_logits.detach(), labels)
    return -(2.0 / beta) * F.logsigmoid(-beta * (logp - ref_logp)).mean()
