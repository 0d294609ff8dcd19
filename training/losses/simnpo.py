"""SimNPO (Fan et al. 2024): reference-free, length-normalised NPO.

    L_SimNPO = -(2/beta) * E[ log sigmoid( -(beta/|y|) * log pi_theta(y|x) - gamma ) ]

|y| is the number of answer tokens; gamma is a reward margin (0 in the paper's TOFU runs).
"""

import torch
import torch.nn.functional as F

from .common import sequence_logprob


def simnpo_loss(
    logits: torch.Tensor, labels: torch.Tensor, beta: float = 2.5, gamma: float = 0.0
) -> torch.Tensor:
    logp, n_tokens = sequence_logprob(logits, labels)
    avg_logp = logp / n_tokens.clamp_min(1).to(logp.dtype)
    return -(2.0 / beta) * F.logsigmoid(-beta * avg_logp - gamma).mean()
