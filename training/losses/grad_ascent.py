"""Gradient ascent on the forget set (Jang et al. 2023).

    L_GA = -NLL(forget) = 1/N sum_t log p(y_t | y_<t, x)

Minimising it drives the probability of the forget answers down without bound, which is
why GA alone collapses the model; GradDiff adds the retain NLL to hold utility.
"""

import torch

from .common import nll_loss


def grad_ascent_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return -nll_loss(logits, labels)
