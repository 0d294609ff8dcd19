"""The registry of training methods: how each method combines the pure losses.

A method declares which forward passes it needs (retain batch, frozen reference model,
"I don't know" answers, one layer's hidden states instead of logits); the trainer runs exactly
those and hands the outputs over in a `MethodInputs`. Adding a method = one loss file + one
entry here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from .losses import (
    dpo_loss, grad_ascent_loss, ihl_loss, nll_loss, npo_loss, random_unit_vector, rmu_forget_loss,
    rmu_retain_loss, satimp_loss, simnpo_loss, undial_loss, wga_loss,
)


@dataclass
class MethodParams:
    beta: float = 0.1           # NPO / IdkDPO / SimNPO temperature; WGA exponent; SatImp beta1
    gamma: float = 0.0          # SimNPO margin; UnDIAL logit adjustment (set per method config)
    retain_weight: float = 1.0  # weight of the retain term (retain NLL; RMU's alpha)
    forget_weight: float = 1.0  # weight of the forget term
    beta2: float = 1.0          # SatImp: exponent of the importance weight (1 - p)
    layer: int = 7              # RMU: decoder block (0-based) whose output is steered / kept
    steering_coeff: float = 270.0  # RMU: c, the norm of the target c * u
    seed: int = 0               # RMU: seed of the random direction u


@dataclass
class MethodInputs:
    forget_labels: torch.Tensor
    forget_logits: Optional[torch.Tensor] = None
    retain_logits: Optional[torch.Tensor] = None
    retain_labels: Optional[torch.Tensor] = None
    ref_forget_logits: Optional[torch.Tensor] = None
    idk_logits: Optional[torch.Tensor] = None
    idk_labels: Optional[torch.Tensor] = None
    ref_idk_logits: Optional[torch.Tensor] = None
    # methods with needs_hidden_layer: output of decoder block params.layer, [B, T, D]
    forget_hidden: Optional[torch.Tensor] = None
    retain_hidden: Optional[torch.Tensor] = None
    ref_retain_hidden: Optional[torch.Tensor] = None


@dataclass(frozen=True)
class Method:
    name: str
    forget_term: Callable[[MethodInputs, MethodParams], torch.Tensor]
    needs_retain: bool = False
    needs_reference: bool = False
    needs_idk: bool = False
    # the trainer hands over block `params.layer`'s hidden states (forget, retain, and the
    # reference's on retain if needs_reference) instead of logits
    needs_hidden_layer: bool = False
    # the retain term (weighted by params.retain_weight); None: NLL on the retain batch
    retain_term: Optional[Callable[[MethodInputs, MethodParams], torch.Tensor]] = None
    # parameters this method reads beyond the shared ones, with its defaults (a method's
    # default for `beta` goes here too); the config refuses method-specific keys elsewhere
    defaults: dict[str, float] = field(default_factory=dict, compare=False)
    summary: str = ""

    def loss(self, inputs: MethodInputs, params: MethodParams) -> dict[str, torch.Tensor]:
        """Total loss and its parts (for logging)."""
        forget = self.forget_term(inputs, params)
        parts = {"forget_loss": forget}
        total = params.forget_weight * forget
        if self.needs_retain:
            if self.retain_term is not None:
                retain = self.retain_term(inputs, params)
            elif inputs.retain_logits is None:
                raise ValueError(f"method {self.name!r} needs a retain batch")
            else:
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


def _rmu_forget(i: MethodInputs, p: MethodParams) -> torch.Tensor:
    direction = random_unit_vector(i.forget_hidden.shape[-1], p.seed)
    return rmu_forget_loss(i.forget_hidden, i.forget_labels, direction, p.steering_coeff)


def _rmu_retain(i: MethodInputs, p: MethodParams) -> torch.Tensor:
    if i.retain_hidden is None or i.ref_retain_hidden is None:
        raise ValueError("method 'rmu' needs the trained and the frozen model's retain hidden states")
    return rmu_retain_loss(i.retain_hidden, i.ref_retain_hidden, i.retain_labels)


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
        Method("wga", lambda i, p: wga_loss(i.forget_logits, i.forget_labels, p.beta),
               needs_retain=True, defaults={"beta": 1.0},
               summary="probability-weighted gradient ascent + retain NLL"),
        Method("satimp", lambda i, p: satimp_loss(i.forget_logits, i.forget_labels, p.beta, p.beta2),
               needs_retain=True, defaults={"beta": 5.0, "beta2": 1.0, "retain_weight": 0.1},
               summary="saturation x importance weighted gradient ascent + retain NLL"),
        Method("rmu", _rmu_forget, retain_term=_rmu_retain, needs_retain=True, needs_reference=True,
               needs_hidden_layer=True, defaults={"layer": 7, "steering_coeff": 270.0, "retain_weight": 1200.0},
               summary="steer layer-L activations on forget to c*u, keep them on retain"),
    ]
}


def get_method(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; valid methods: {sorted(METHODS)}") from None
