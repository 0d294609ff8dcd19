"""SatImp (Yang et al. 2025, "Exploring Criteria of Loss Reweighting to Enhance LLM
Unlearning"): gradient ascent with saturation x importance token weights.

    p_t = p(y_t | y_<t, x)
    w_t = sg(p_t)^beta1 * sg(1 - p_t)^beta2
    L_SatImp = 1/N sum_t w_t * log p(y_t | y_<t, x)

sg = stop-gradient. The saturation factor p^beta1 stops pushing tokens that are already
unlikely (as in WGA); the importance factor (1 - p)^beta2 also spares tokens the model is
near-certain of (often generic, shared with retain data). The weight peaks at
p = beta1 / (beta1 + beta2). Reference defaults: beta1 = 5, beta2 = 1; the method adds retain NLL.
"""

import torch

from .common import masked_mean, token_logprobs


def satimp_loss(logits: torch.Tensor, labels: torch.Tensor, beta1: float = 5.0, beta2: float = 1.0) -> torch.Tensor:
    logp, mask = token_logprobs(logits, labels)
    p = logp.detach().exp()
    weight = p.pow(beta1) * (1.0 - p).clamp_min(0.0).pow(beta2)
    return masked_mean(weight * logp, mask)
