"""Simulated weight quantization (the quantization attack): a model's linear weights rounded to
INT8 or INT4 and dequantized back into float, as the round-to-nearest (RTN) experiments of
"Catastrophic Failure of LLM Unlearning via Quantization" (Zhang et al., ICLR 2025).

Pure maths, then the apply step:
    quantize_weight(w, bits, group_size)   symmetric round-to-nearest of one weight matrix
    quantize_model(model, spec)            every nn.Linear weight of a model in place (embeddings
                                           and the output head only when asked)

For a weight matrix W (out x in), split along its input dimension into groups G of `group_size`
columns (one group per row when group_size is None: per-output-channel), with qmax = 2^(bits-1) - 1:

    s_G   = max_{j in G} |W_ij| / qmax                  (one scale per row and group; 1 where all are 0)
    Q_ij  = clamp(round(W_ij / s_G), -qmax - 1, qmax)
    W'_ij = s_G * Q_ij

A last group shorter than `group_size` (in not a multiple of it) is its own group.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from ..errors import ConfigError

BITS = (8, 4)


@dataclass(frozen=True)
class QuantSpec:
    bits: int
    group_size: Optional[int] = None      # None: per output channel (one scale per row)
    embeddings: bool = False              # also the input embeddings and the output head

    @property
    def label(self) -> str:
        """int8-channel, int4-g128, ..."""
        return f"int{self.bits}-" + ("channel" if self.group_size is None else f"g{self.group_size}")


def check_spec(bits: int, group_size: Optional[int]) -> None:
    if bits not in BITS:
        raise ConfigError(f"quantization: {bits}-bit is not supported; valid bit widths: {list(BITS)}")
    if group_size is not None and group_size < 1:
        raise ConfigError(f"quantization: group size must be >= 1 (or null for per-channel), got {group_size}")


def quantize_weight(w: torch.Tensor, bits: int, group_size: Optional[int] = None) -> torch.Tensor:
    """`w` (out x in) symmetrically rounded to `bits` per row (per `group_size` columns of a row),
    dequantized: the float tensor a quantized model computes with (same shape and dtype)."""
    check_spec(bits, group_size)
    if w.dim() != 2:
        raise ValueError(f"quantize_weight expects a 2-d weight matrix, got shape {tuple(w.shape)}")
    qmax = 2 ** (bits - 1) - 1
    rows, cols = w.shape
    g = cols if group_size is None else min(group_size, cols)
    pad = (-cols) % g
    x = torch.nn.functional.pad(w.detach().float(), (0, pad)).reshape(rows, -1, g)   # zeros do not move a max
    scale = x.abs().amax(dim=-1, keepdim=True) / qmax
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.clamp(torch.round(x / scale), -qmax - 1, qmax)
    return (q * scale).reshape(rows, -1)[:, :cols].to(w.dtype)


def _targets(model, embeddings: bool) -> list[tuple[str, torch.nn.Parameter]]:
    """(name, weight) of every matrix to quantize, each parameter once (tied embeddings)."""
    skip = set()
    if not embeddings:
        for m in (model.get_input_embeddings(), model.get_output_embeddings()):
            if m is not None:
                skip.add(id(m.weight))
    seen, out = set(), []
    for name, module in model.named_modules():
        wanted = isinstance(module, torch.nn.Linear) or (embeddings and isinstance(module, torch.nn.Embedding))
        if not wanted or id(module.weight) in skip or id(module.weight) in seen:
            continue
        seen.add(id(module.weight))
        out.append((name, module.weight))
    return out


@torch.no_grad()
def quantize_model(model, spec: QuantSpec) -> dict:
    """Every linear weight of `model` replaced by its quantized-dequantized value (in place);
    returns what was quantized and its mean relative error ||W' - W|| / ||W||."""
    check_spec(spec.bits, spec.group_size)
    targets = _targets(model, spec.embeddings)
    errors, params = [], 0
    for _, weight in targets:
        new = quantize_weight(weight.data, spec.bits, spec.group_size)
        errors.append(float((new.float() - weight.data.float()).norm() / weight.data.float().norm().clamp_min(1e-12)))
        params += weight.numel()
        weight.data.copy_(new)
    return {"label": spec.label, "bits": spec.bits, "group_size": spec.group_size, "embeddings": spec.embeddings,
            "matrices": len(targets), "parameters": params,
            "relative_error": round(sum(errors) / len(errors), 6) if errors else None}
