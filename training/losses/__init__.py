"""Pure loss functions over (logits, labels[, reference/teacher logits]) or, for RMU, over one
layer's hidden states; see each module."""

from .common import IGNORE_INDEX, nll_loss, sequence_logprob, token_logprobs
from .dpo import dpo_loss
from .grad_ascent import grad_ascent_loss
from .ihl import ihl_loss
from .npo import npo_loss
from .rmu import activation_mse, random_unit_vector, rmu_forget_loss, rmu_loss, rmu_retain_loss
from .satimp import satimp_loss
from .simnpo import simnpo_loss
from .undial import undial_loss
from .wga import wga_loss

__all__ = [
    "IGNORE_INDEX", "nll_loss", "sequence_logprob", "token_logprobs", "dpo_loss",
    "grad_ascent_loss", "ihl_loss", "npo_loss", "simnpo_loss", "undial_loss",
    "wga_loss", "satimp_loss", "activation_mse", "random_unit_vector",
    "rmu_forget_loss", "rmu_retain_loss", "rmu_loss",
]
