"""Shared token-level helpers for the losses.

Convention (Hugging Face): `labels` is aligned with `input_ids`; position t of the logits
predicts label t+1, and label -100 marks a position that carries no loss (prompt, padding).
Every helper shifts once, then masks ignored positions *before* any gather, so -100 never
reaches an index operation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def shift_for_next_token(logits: torch.Tensor, labels: torch.Tensor):
    """Return (logits[:, :-1], labels[:, 1:], mask) with ignored labels replaced by 0."""
    if logits.shape[:2] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} disagree")
    logits = logits[:, :-1]
    labels = labels[:, 1:]
    mask = labels != IGNORE_INDEX
    safe_labels = labels.masked_fill(~mask, 0)
    return logits, safe_labels, mask


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor):
    """Log-probability of every label token: returns (logp [B, T-1], mask [B, T-1]).

    Computed in float32 whatever the logits dtype, so bf16 models get exact sums."""
    logits, labels, mask = shift_for_next_token(logits, labels)
    logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    return logp * mask, mask


def sequence_logprob(logits: torch.Tensor, labels: torch.Tensor):
    """Sum of answer-token log-probs per sequence, and the number of answer tokens: ([B], [B])."""
    logp, mask = token_logprobs(logits, labels)
    return logp.sum(-1), mask.sum(-1)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `values` over positions where `mask` is true (0 if there are none)."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp_min(1.0)


def nll_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood over answer tokens: -1/N sum_t log p(y_t | y_<t, x)."""
    logits, labels, mask = shift_for_next_token(logits, labels)
    per_token = F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1), reduction="none"
    ).view_as(labels)
    return masked_mean(per_token, mask)
