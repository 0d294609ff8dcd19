"""Answer probability as TOFU defines it: the length-normalised probability of the answer,

    P(a | q) = exp( 1/|a| * sum_t log p(a_t | a_<t, q) ),

computed with teacher forcing over the chat-formatted prompt, answer tokens only. Used by the
evaluation during training (callbacks.py), by benchmarks/tofu_mini_methods.py and by the tests;
evaluation/probability.py re-exports it."""

from __future__ import annotations

import torch

from ..data.formatting import encode_qa, pad_batch
from ..data.records import QA
from ..stats import finite_mean
from .losses import sequence_logprob


@torch.no_grad()
def answer_probabilities(model, tokenizer, records: list[QA], max_length: int = 256,
                         batch_size: int = 16) -> list[float]:
    """One probability per record, in order (records with no answer token get NaN)."""
    encoded = [encode_qa(tokenizer, r, max_length) for r in records]
    device = next(model.parameters()).device
    out: list[float] = []
    for start in range(0, len(encoded), batch_size):
        batch = {k: v.to(device) for k, v in pad_batch(encoded[start:start + batch_size], tokenizer.pad_token_id).items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        logp, n = sequence_logprob(logits, batch["labels"])
        mean = logp / n.clamp_min(1)
        out += [float("nan") if c == 0 else float(torch.exp(m)) for m, c in zip(mean, n)]
    return out


def mean(values: list[float]) -> float:
    """finite_mean, NaN where no probability is finite (what the training callback logs)."""
    m = finite_mean(values)
    return float("nan") if m is None else m
