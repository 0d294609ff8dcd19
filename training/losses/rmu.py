"""Representation Misdirection for Unlearning, RMU (Li et al. 2024, "The WMDP Benchmark:
Measuring and Reducing Malicious Use With Unlearning").

With h_t the output of decoder block L at position t (hidden size D), u a fixed random unit
vector and c the steering coefficient:

    L_forget = 1/B sum_b 1/|T_b| sum_{t in T_b} 1/D || h_t(forget) - c * u ||^2
    L_retain = 1/B sum_b 1/|T_b| sum_{t in T_b} 1/D || h_t(retain) - h_t^frozen(retain) ||^2
    L_RMU    = L_forget + alpha * L_retain

T_b are the positions that predict an answer token of sequence b (labels[t+1] != -100, the
project's convention for every loss), so prompts and padding carry no loss. Scrambling layer
L's activations on the forget answers into a large, fixed direction makes the later (untouched)
layers produce noise there; the retain term keeps layer L where the frozen model had it.

u is drawn once from a seed: uniform in [0, 1)^D, then normalised (as the reference code does),
so the same seed gives the same direction on every step, resume and machine.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from .common import IGNORE_INDEX


def answer_positions(labels: torch.Tensor) -> torch.Tensor:
    """[B, T] bool: positions whose next label is an answer token (the last position never is)."""
    mask = torch.zeros_like(labels, dtype=torch.bool)
    mask[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    return mask


def activation_mse(hidden: torch.Tensor, target: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean over sequences of the mean over answer-predicting positions of the per-position
    mean squared difference over the hidden dimension. `target` broadcasts against `hidden`."""
    if hidden.shape[:2] != labels.shape:
        raise ValueError(f"hidden states {tuple(hidden.shape)} and labels {tuple(labels.shape)} disagree")
    mask = answer_positions(labels).to(torch.float32)
    per_position = (hidden.float() - target.float()).pow(2).mean(-1)
    per_sequence = (per_position * mask).sum(-1) / mask.sum(-1).clamp_min(1.0)
    return per_sequence.mean()


@lru_cache(maxsize=8)
def _unit_vector(dim: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(dim, generator=g, dtype=torch.float32)
    return u / u.norm()


def random_unit_vector(dim: int, seed: int) -> torch.Tensor:
    """The fixed direction u: a function of (dim, seed) only, drawn once and reused."""
    return _unit_vector(dim, seed).clone()


def rmu_forget_loss(hidden: torch.Tensor, labels: torch.Tensor, direction: torch.Tensor,
                    steering_coeff: float) -> torch.Tensor:
    """L_forget: layer-L activations on forget answers pulled to c * u."""
    target = steering_coeff * direction.to(device=hidden.device, dtype=torch.float32)
    return activation_mse(hidden, target, labels)


def rmu_retain_loss(hidden: torch.Tensor, frozen_hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """L_retain: layer-L activations on retain answers held at the frozen model's."""
    return activation_mse(hidden, frozen_hidden.detach(), labels)


def rmu_loss(forget_hidden: torch.Tensor, forget_labels: torch.Tensor, retain_hidden: torch.Tensor,
             frozen_retain_hidden: torch.Tensor, retain_labels: torch.Tensor, direction: torch.Tensor,
             steering_coeff: float, alpha: float) -> torch.Tensor:
    """L_RMU = L_forget + alpha * L_retain."""
    return (rmu_forget_loss(forget_hidden, forget_labels, direction, steering_coeff)
            + alpha * rmu_retain_loss(retain_hidden, frozen_retain_hidden, retain_labels))
