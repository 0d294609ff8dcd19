"""Pure loss functions over (logits, labels[, reference/teacher logits]); see each module."""

from .common import IGNORE_INDEX, nll_loss, sequence_logprob, token_logprobs
from .dpo import dpo_loss
from .grad_ascent import grad_ascent_loss
from .ihl import ihl_loss
from .npo import npo_loss
from .simnpo import simnpo_loss
from .undial import undial_loss

__all__ = [
    "IGNORE_INDEX", "nll_loss", "sequence_logprob", "token_logprobs", "dpo_loss",
    "grad_ascent_loss", "ihl_loss", "npo_loss", "simnpo_loss", "undial_loss",
]
