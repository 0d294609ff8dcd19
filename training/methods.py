"""The registry of training methods: how each method combines the pure losses.

A method declares which forward passes it needs (retain batch, frozen reference model,
"I don't know" answers); the trainer runs exactly those and hands the logits over in a
`MethodInputs`. Adding a method = one loss file + one entry here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from .losses import (
    dpo_loss, grad_ascent_loss, ihl_loss, nll_loss, npo_loss, simnpo_loss, undial_loss,
)


@dataclass
class MethodParams:
    beta: float = 0.1           # NPO / IdkDPO / SimNPO temperature
    gamma: float = 0.0          # SimNPO margin; UnDIAL logit adjustment (set per method config)
    retain_weight: float = 1.0  # weight of the retain NLL term
    forget_weight: float = 1.0  # weight of the forget term


@dataclass
class MethodInputs:
    forget_logits: torch.Tensor
    forget_labels: torch.Tensor
    retain_logits: Optional[torch.Tensor] = None
    retain_labels: Optional[torch.Tensor] = None
    ref_forget_logits: Optional[torch.Tensor] = None
    idk_logits: Optional[torch.Tensor] = None
    idk_labels: Optional[torch.Tensor] = None
    ref_idk_logits: Optional[torch.Tensor] = None


@dataclass(frozen=True)
class Method:
    name: str
    forget_term: Callable[[MethodInputs, MethodParams], torch.Tensor]
    needs_retain: bool = False
    needs_reference: bool = False
    needs_idk: bool = False
    summary: str = ""

    def loss(self, inputs: MethodInputs, params: MethodParams) -> dict[str, torch.Tensor]:
        """Total loss and its parts (for logging)."""
        forget = self.forget_term(inputs, params)
        parts = {"forget_loss": forget}
        total = params.forget_weight * forget
        if self.needs_retain:
            if inputs.retain_logits is None:
                raise ValueError(f"method {self.name!r} needs a retain batch")
            retain = nll_loss(inputs.retain_logits, inputs.retain_labels)
            parts["retain_loss"] = retain
            total = total + params.retain_weight * retain
        parts["loss"] = total
        return parts


def _idk_dpo(i: MethodInputs, p: MethodParams) -> torch.Tensor:
    return dpo_loss(
        i.idk_logits, i.idk_labels, i.forget_logits, i.forget_labels,
        i.ref_idk_logits, i.ref_forget_logits, beta=p.beta,
    )


METHODS: dict[str, Method] = {
    m.name: m
    for m in [
        Method("finetune", lambda i, p: nll_loss(i.forget_logits, i.forget_labels),
               summary="plain NLL on the training set (builds target/retain models)"),
        Method("grad_ascent", lambda i, p: grad_ascent_loss(i.forget_logits, i.forget_labels),
               summary="maximise forget NLL"),
        Method("grad_diff", lambda i, p: grad_ascent_loss(i.forget_logits, i.forget_labels),
               needs_retain=True, summary="grad ascent on forget + NLL on retain"),
        Method("npo", lambda i, p: npo_loss(i.forget_logits, i.forget_labels, i.ref_forget_logits, p.beta),
               needs_retain=True, needs_reference=True, summary="NPO + retain NLL"),
        Method("simnpo", lambda i, p: simnpo_loss(i.forget_logits, i.forget_labels, p.beta, p.gamma),
               needs_retain=True, summary="reference-free length-normalised NPO + retain NLL"),
        Method("idk_dpo", _idk_dpo, needs_retain=True, needs_reference=True, needs_idk=True,
               summary="DPO preferring 'I don't know' answers + retain NLL"),
        Method("ihl", lambda i, p: ihl_loss(i.forget_logits, i.forget_labels),
               needs_retain=True, summary="inverted hinge loss + retain NLL"),
        Method("undial", lambda i, p: undial_loss(i.forget_logits, i.forget_labels, i.ref_forget_logits, p.gamma),
               needs_reference=True, summary="self-distillation to adjusted teacher logits"),
    ]
}


def get_method(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; valid methods: {sorted(METHODS)}") from None
