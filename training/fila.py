"""FILA: Fisher-weighted Initialisation of Low-rank Adapters (Cha et al. 2025).

Three separate steps, each testable on its own:

1. `fisher_statistics` - the statistics pass: the diagonal empirical Fisher of every target
   Linear weight, E[(d log p(y|x) / dW)^2], accumulated over examples (per-example gradients
   with fisher_batch_size=1) and divided by the number of answer tokens. Run once on the
   forget set and once on the retain set; cached on disk by a hash of the weights and data.
   Under several processes (torch.distributed initialised, world size > 1) each rank takes a
   disjoint shard (`rank_shard`: examples rank, rank+world, ...) and the per-rank sums of
   squared gradients and token counts are all-reduced (summed) before the division, so every
   rank holds the statistics of the whole set - equal, up to float summation order, to a
   single process's - and initialises the LoRA factors identically.
2. `fila_factors` - pure maths. With relative importance I = F_f / (eps + F_r) and row
   weights w_i = sqrt(sum_j I_ij), take the rank-r SVD of diag(w) W = U S V^T and set

       A = (V sqrt(S'))^T,  B = diag(1/w) U sqrt(S'),  S' = S / scaling

   so that scaling * B A is the best rank-r approximation of W in the importance-weighted
   norm: the adapter starts on the directions that matter for the forget set and not for the
   retain set. The base weight becomes the residual W - scaling * B A (A and B cast to their
   storage dtype first), so the model's output is unchanged at initialisation.
3. `apply_fila` - writes A, B and the residual into a PEFT LoRA model.

Because the base weights change, the artefact must be the merged model (see run.py).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from .losses.common import sequence_logprob


def _target_linears(model, target_modules: list[str]) -> dict[str, torch.nn.Linear]:
    found = {
        name: module for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and name.split(".")[-1] in target_modules
    }
    if not found:
        raise ValueError(f"no Linear layers named {target_modules} in the model")
    return found


def distributed_world() -> tuple[int, int]:
    """(rank, world size) of the initialised torch.distributed group, else (0, 1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def rank_shard(examples: list) -> list:
    """This rank's disjoint share of `examples` (rank, rank+world, ...); all of them on one process."""
    rank, world = distributed_world()
    return examples[rank::world]


def _reduce_across_ranks(sums: dict[str, torch.Tensor], n_tokens: int) -> int:
    """All-reduce (sum) the per-rank Fisher sums in place and return the total token count.
    A no-op on one process. The tensors stay on their device (the backend's: gloo on CPU,
    NCCL on the GPU the model was moved to)."""
    import torch.distributed as dist

    _, world = distributed_world()
    if world == 1:
        return n_tokens
    device = next(iter(sums.values())).device
    count = torch.tensor([n_tokens], dtype=torch.float64, device=device)
    dist.all_reduce(count)
    for name in sorted(sums):  # the same order on every rank
        dist.all_reduce(sums[name])
    return int(count.item())


def fisher_statistics(model, batches, target_modules: list[str], progress=None) -> dict[str, torch.Tensor]:
    """Diagonal empirical Fisher of each target weight, normalised by the answer-token count.

    `batches` yields dicts with input_ids / attention_mask / labels: under several processes,
    this rank's shard only (`rank_shard`), since the sums are reduced across ranks - feeding
    every rank the whole set would count it world-size times. The model's own weights are not
    changed; gradients are cleared afterwards."""
    linears = _target_linears(model, target_modules)
    fisher = {name: torch.zeros_like(m.weight, dtype=torch.float32) for name, m in linears.items()}
    requires = {n: p.requires_grad for n, p in model.named_parameters()}
    for p in model.parameters():
        p.requires_grad_(False)
    for m in linears.values():
        m.weight.requires_grad_(True)
    was_training = model.training
    model.eval()
    n_tokens = 0
    try:
        for batch in batches:
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            logp, count = sequence_logprob(logits, batch["labels"])
            n_tokens += int(count.sum())
            model.zero_grad(set_to_none=True)
            logp.sum().backward()
            for name, m in linears.items():
                fisher[name] += m.weight.grad.detach().float() ** 2
            if progress is not None:
                progress.update(1)
    finally:
        model.zero_grad(set_to_none=True)
        for n, p in model.named_parameters():
            p.requires_grad_(requires[n])
        model.train(was_training)
    n_tokens = _reduce_across_ranks(fisher, n_tokens)
    if n_tokens == 0:
        raise ValueError("Fisher statistics: the data has no answer tokens")
    return {name: f / n_tokens for name, f in fisher.items()}


def top_singular_triplets(M: torch.Tensor, rank: int):
    """(U [m, r], S [r], Vh [r, n]): the top-`rank` singular triplets of M, largest first.

    Through the eigen-decomposition of the smaller Gram matrix (float64): for the leading
    singular values this is as exact as a full SVD and several times faster (a transformer
    has hundreds of target matrices; a full SVD of each was the slowest step of FILA)."""
    transpose = M.shape[0] < M.shape[1]
    X = M.T if transpose else M                     # tall: [m, n] with m >= n
    evals, evecs = torch.linalg.eigh(X.T @ X)       # ascending
    S = evals[-rank:].flip(0).clamp_min(0).sqrt()
    V = evecs[:, -rank:].flip(1)
    U = (X @ V) / S.clamp_min(torch.finfo(S.dtype).tiny)
    return (V, S, U.T) if transpose else (U, S, V.T)


def fila_factors(weight: torch.Tensor, fisher_forget: torch.Tensor, fisher_retain: torch.Tensor,
                 rank: int, scaling: float, eps: float = 1e-5):
    """(A [r, in], B [out, r], residual [out, in]) for one Linear weight W [out, in].

    Pure function; see the module docstring for the formula. Computed in float64, then A and
    B are cast to the weight's dtype *before* the residual, so residual + scaling*B@A == W
    up to the storage dtype's rounding."""
    if weight.ndim != 2 or fisher_forget.shape != weight.shape or fisher_retain.shape != weight.shape:
        raise ValueError("weight and Fisher matrices must share one 2-D shape")
    rank = min(rank, *weight.shape)
    W = weight.detach().double()
    importance = fisher_forget.double() / (eps + fisher_retain.double())
    w = importance.sum(dim=1).sqrt()
    # rows with no importance at all would divide by zero; give them a tiny weight instead
    w = w.clamp_min(max(float(w.max()) * 1e-6, 1e-12))
    U, S, Vh = top_singular_triplets(w[:, None] * W, rank)
    root = (S / scaling).sqrt()
    A = (root[:, None] * Vh).to(weight.dtype)
    B = ((1.0 / w)[:, None] * U * root[None, :]).to(weight.dtype)
    residual = (W - scaling * (B.double() @ A.double())).to(weight.dtype)
    return A, B, residual


def apply_fila(peft_model, fisher_forget: dict, fisher_retain: dict, adapter: str = "default") -> int:
    """Initialise every LoRA layer of `peft_model` with FILA; returns the number of layers set."""
    from peft.tuners.lora import LoraLayer

    count = 0
    for name, module in peft_model.named_modules():
        if not isinstance(module, LoraLayer) or adapter not in module.lora_A:
            continue
        key = _fisher_key(name, fisher_forget)
        base = module.get_base_layer()
        device = base.weight.device
        A, B, residual = fila_factors(
            base.weight.data, fisher_forget[key].to(device), fisher_retain[key].to(device),
            rank=module.r[adapter], scaling=module.scaling[adapter],
        )
        with torch.no_grad():
            module.lora_A[adapter].weight.copy_(A.to(module.lora_A[adapter].weight.dtype))
            module.lora_B[adapter].weight.copy_(B.to(module.lora_B[adapter].weight.dtype))
            base.weight.copy_(residual)
        count += 1
    if count == 0:
        raise ValueError("apply_fila: the model has no LoRA layers")
    return count


def _fisher_key(peft_name: str, fisher: dict) -> str:
    """Map a PEFT module name (base_model.model.x.y) back to the plain model's name (x.y)."""
    for prefix in ("base_model.model.", ""):
        if peft_name.startswith(prefix) and peft_name[len(prefix):] in fisher:
            return peft_name[len(prefix):]
    raise KeyError(f"no Fisher statistics for layer {peft_name}")


def statistics_key(model, target_modules: list[str], examples: list[dict]) -> str:
    """A hash of everything the statistics depend on: target weights and the encoded data."""
    digest = hashlib.sha256()
    for name, m in sorted(_target_linears(model, target_modules).items()):
        digest.update(name.encode())
        digest.update(m.weight.detach().float().cpu().numpy().tobytes())
    digest.update(json.dumps([[e["input_ids"], e["labels"]] for e in examples]).encode())
    return digest.hexdigest()[:24]


def _on_every_rank(flag: bool) -> bool:
    """True if `flag` is true on every rank (one collective call; plain `flag` on one process)."""
    import torch.distributed as dist

    _, world = distributed_world()
    if world == 1:
        return flag
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    value = torch.tensor([int(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item())


def cached_fisher(cache_dir: Path, key: str, compute) -> dict[str, torch.Tensor]:
    """Load statistics `key` from `cache_dir`, or compute and save them atomically.

    Under several processes the ranks decide together (a rank that sees the file while another
    does not would leave that one waiting in the reduction forever): load if every rank sees
    the file, else all compute their shard; rank 0 writes the reduced result."""
    from safetensors.torch import load_file, save_file

    path = Path(cache_dir) / f"fisher-{key}.safetensors"
    if _on_every_rank(path.is_file()):
        return load_file(str(path))
    stats = compute()
    rank, world = distributed_world()
    if rank == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        save_file({k: v.detach().cpu().contiguous() for k, v in stats.items()}, str(tmp))
        tmp.rename(path)
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
    return stats
