"""DPO loss, used by IdkDPO (TOFU's "I don't know" answers preferred over the forget answers).

    L = -(2/beta) * E[ log sigmoid( beta * ((log pi(y_w|x) - log pi_ref(y_w|x))
                                           - (log pi(y_l|x) - log pi_ref(y_l|x))) ) ]

y_w: the preferred (refusal) answer, y_l: the original forget answer; sequence log-probs
are sums over answer tokens. The 2/beta scale matches NPO so the two share learning rates.
"""

import torch
import torch.nn.functional as F

from .common import sequence_logprob


def dpo_loss(
    chosen_logits: torch.Tensor,
    chosen_labels: torch.Tensor,
    rejected_logits: torch.Tensor,
    rejected_labels: torch.Tensor,
    ref_chosen_logits: torch.Tensor,
    ref_rejected_logits: torch.Tensor,
    beta: float = 0.1,
) -> torch.Tensor:
    chosen, _ = sequence_logprob(chosen_logits, chosen_labels)
    rejected, _ = sequence_logprob(rejected_logits, rejected_labels)
    with torch.no_grad():
        ref_chosen, _ = sequence_logprob(ref_chosen_logits.detach(), chosen_labels)
        ref_rejected, _ = sequence_logprob(ref_rejected_logits.detach(), rejected_labels)
    margin = (chosen - ref_chosen) - (rejected - ref_rejected)
    return -(2.0 / beta) * F.logsigmoid(beta * margin).mean()
