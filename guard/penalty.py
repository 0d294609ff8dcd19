"""The semantic filter: a per-target additive penalty over the vocabulary.

A target's *key tokens* are the tokens of its names and titles (every tokenisation variant). A
vocabulary token is penalised by how close it lies to the nearest key token in the language
model's own input-embedding space (centred, cosine):

    w(v)       = clip((max_k cos(e_v, e_k) - s_min) / (1 - s_min), 0, 1)
    penalty(v) = -strength * w(v)

so the key tokens themselves get -strength, their near neighbours ("Kuwait" / "Kuwaiti", case and
spacing variants) a share of it, and the rest of the vocabulary nothing. Stored sparse (only
w > 0); a request guarding several targets takes the most negative penalty per token. Pure torch.
"""

from __future__ import annotations

import torch


def centred_unit(embeddings: torch.Tensor) -> torch.Tensor:
    e = embeddings.float()
    e = e - e.mean(0, keepdim=True)
    return torch.nn.functional.normalize(e, dim=-1)


def semantic_penalty(unit_embeddings: torch.Tensor, key_tokens: list[int], strength: float,
                     min_sim: float, chunk: int = 8192) -> tuple[torch.Tensor, torch.Tensor]:
    """(token ids, penalties <= 0) for one target; `unit_embeddings` from `centred_unit`."""
    if not key_tokens:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0)
    if not 0.0 <= min_sim < 1.0:
        raise ValueError(f"min_sim must be in [0, 1), got {min_sim}")
    keys = unit_embeddings[torch.tensor(sorted(set(key_tokens)))]
    best = torch.cat([(unit_embeddings[i:i + chunk] @ keys.T).max(dim=1).values
                      for i in range(0, unit_embeddings.shape[0], chunk)])
    weight = ((best - min_sim) / (1.0 - min_sim)).clamp(0.0, 1.0)
    weight[torch.tensor(sorted(set(key_tokens)))] = 1.0
    idx = torch.nonzero(weight > 0).flatten()
    return idx, -strength * weight[idx]


def dense_penalty(vocab_size: int, parts: list[tuple[torch.Tensor, torch.Tensor]], scale: float = 1.0) -> torch.Tensor:
    """[vocab] penalty: the most negative entry per token over the given sparse penalties."""
    out = torch.zeros(vocab_size)
    for idx, val in parts:
        keep = idx < vocab_size
        out[idx[keep]] = torch.minimum(out[idx[keep]], val[keep] * scale)
    return out
