"""Weighted Gradient Ascent, WGA (Wang et al. 2025, "Rethinking LLM Unlearning Objectives:
A Gradient Perspective and Go Beyond").

Gradient ascent with every forget token weighted by its own (detached) probability:

    w_t = sg( p(y_t | y_<t, x) )^beta
    L_WGA = 1/N sum_t w_t * log p(y_t | y_<t, x)

sg = stop-gradient. Tokens the model has already pushed to low probability get small weights,
so the ascent stops concentrating on them (plain GA's gradient 1/p blows up there); beta = 0
is plain gradient ascent, larger beta focuses harder on still-likely tokens. The method adds
retain NLL (1:1 in the reference, beta = 1).
"""

import torch

from .common import masked_mean, token_logprobs


def wga_loss(logits: torch.Tensor, labels: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    logp, mask = token_logprobs(logits, labels)
    weight = logp.detach().exp().pow(beta)
    return masked_mean(weight * logp, mask)
