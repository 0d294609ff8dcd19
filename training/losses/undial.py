"""UnDIAL: self-distillation with adjusted logits (Dong et al. 2024).

The teacher is the frozen initial model. At every answer position t its logits z_t are
adjusted by lowering the logit of the token to forget:

    target_t = softmax(z_t - gamma * onehot(y_t))
    L = 1/N sum_t CE(target_t, softmax(student_t)) = -1/N sum_t sum_v target_t(v) log p_t(v)

gamma (3-10 in the paper) sets how far the forgotten token is pushed down; the rest of the
teacher's distribution is kept, so the student forgets one token without collapsing.
"""

import torch

from .common import masked_mean, shift_for_next_token


def undial_targets(teacher_logits: torch.Tensor, labels: torch.Tensor, gamma: float) -> torch.Tensor:
    """softmax(z - gamma * onehot(y)) at every (already shifted) position; labels must be valid indices."""
    z = teacher_logits.detach().float()
    z = z.scatter_add(-1, labels.unsqueeze(-1), torch.full_like(z[..., :1], -gamma))
    return torch.softmax(z, dim=-1)


def undial_loss(
    logits: torch.Tensor, labels: torch.Tensor, teacher_logits: torch.Tensor, gamma: float = 5.0
) -> torch.Tensor:
    student, shifted, mask = shift_for_next_token(logits, labels)
    teacher, _, _ = shift_for_next_token(teacher_logits, labels)
    target = undial_targets(teacher, shifted, gamma)
    per_token = -(target * torch.log_softmax(student.float(), dim=-1)).sum(-1)
    return masked_mean(per_token, mask)
