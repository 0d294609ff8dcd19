"""GradNorm membership inference on a checkpoint's weights (metrics/mia.py `gradnorm_score`).

Needs the weights and a backward pass per text: an attacker who holds the checkpoint. A runtime guard is
no part of the weights and cannot move it; for a guarded system it is measured on the base checkpoint.
"""

from __future__ import annotations

from typing import Sequence

from .metrics.mia import gradnorm_score


def gradient_norms(model, texts: Sequence[Sequence[int]]) -> list[list[float]]:
    """Per text (token ids, at least two): the L2 norm of the gradient of its mean token loss with respect
    to each trainable parameter tensor (the model in eval mode: no dropout)."""
    import torch

    was_training = model.training
    model.eval()
    params = [p for p in model.parameters() if p.requires_grad]
    device = params[0].device
    out = []
    try:
        for ids in texts:
            x = torch.tensor([list(ids)], device=device)
            loss = model(input_ids=x, labels=x).loss
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            out.append([float(g.norm()) for g in grads if g is not None])
    finally:
        model.train(was_training)
    return out


def gradnorm_scores(model, texts: Sequence[Sequence[int]]) -> list[float]:
    """GradNorm per text (higher = less likely a training member)."""
    return [gradnorm_score(norms) for norms in gradient_norms(model, texts)]
