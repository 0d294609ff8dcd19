"""Inverted Hinge Loss (Cha et al. 2024, "Learning to Unlearn: Instance-wise Unlearning
for Pre-trained Classifiers" / "Towards Robust and Parameter-Efficient Knowledge Unlearning
for LLMs").

Per forget token t with label y_t and next-token distribution p:

    l_t = 1 + p(y_t) - max_{v != y_t} p(v)

mean over answer tokens. Unlike gradient ascent it is bounded (0 <= l_t <= 2) and stops
pushing once another token overtakes y_t, moving probability mass to the best alternative
rather than spreading it, which protects fluency. The method adds retain NLL (1:1).
"""

import torch

from .common import masked_mean, shift_for_next_token


def ihl_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    logits, labels, mask = shift_for_next_token(logits, labels)
    probs = torch.softmax(logits.float(), dim=-1)
    index = labels.unsqueeze(-1)
    p_true = probs.gather(-1, index).squeeze(-1)
    p_best_other = probs.scatter(-1, index, float("-inf")).amax(dim=-1)
    return masked_mean(1.0 + p_true - p_best_other, mask)
