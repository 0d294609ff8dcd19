"""Greedy generation for evaluation: vLLM (default: the engine users deploy) or transformers
(`models.loading.greedy_generate`).

Prompts arrive as token ids, built once by the harness with the same chat template the
teacher-forced metrics use, so both kinds of metric see identical prompts."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from .vllm_generate import run_vllm


def default_dtype(dtype: str) -> str:
    """`auto`: bf16 on CUDA, fp32 on CPU (bf16 is emulated and ~100x slower on CPUs without AVX512-BF16)."""
    if dtype != "auto":
        return dtype
    import torch

    return "bfloat16" if torch.cuda.is_available() else "float32"


def sample_generate(model, tokenizer, prompts: Sequence[Sequence[int]], max_tokens: Sequence[int],
                    temperatures: Sequence[float], seeds: Sequence[Optional[int]], progress=None) -> list[str]:
    """Sampled answers with transformers, one prompt at a time (each its own temperature and seed)."""
    import torch

    device = next(model.parameters()).device
    texts = []
    for ids, budget, temperature, seed in zip(prompts, max_tokens, temperatures, seeds):
        torch.manual_seed(0 if seed is None else seed)
        x = torch.tensor([list(ids)], device=device)
        with torch.inference_mode():
            out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), do_sample=True,
                                 temperature=temperature, top_k=0, top_p=1.0, max_new_tokens=budget,
                                 pad_token_id=tokenizer.pad_token_id)
        texts.append(tokenizer.decode(out[0, len(ids):], skip_special_tokens=True))
        if progress is not None:
            progress(1)
    return texts


def generate_vllm_timed(model_path: str, prompts: Sequence[Sequence[int]], max_tokens: Sequence[int],
                        dtype: str = "auto", echo: bool = True, guard: Optional[str] = None,
                        latency_requests: int = 0, groups: Optional[Sequence[int]] = None,
                        sampling: Optional[Sequence[tuple[float, Optional[int]]]] = None) -> dict:
    """Greedy answers from vLLM (with `guard`, a policy dir: through the guard's logits processor, exactly as
    `unlearn serve --guard` decodes), with vLLM's whole reply: texts, token ids, the batch's wall seconds and the
    seconds of each of the first `latency_requests` prompts sent alone; `groups` (sizes of
    consecutive runs of prompts) are generated as separate batches, timed apart (`group_s`); `sampling`:
    (temperature, seed) per prompt where any is sampled rather than greedy."""
    longest = max(len(p) + m for p, m in zip(prompts, max_tokens))
    request = {"prompt_token_ids": [list(p) for p in prompts], "max_tokens": list(max_tokens),
               "dtype": default_dtype(dtype), "max_model_len": max(512, longest),
               "latency_requests": latency_requests, "groups": list(groups) if groups else None}
    if sampling and any(t for t, _ in sampling):
        request["temperature"] = [t for t, _ in sampling]
        request["seed"] = [s for _, s in sampling]
    env = None
    if guard:
        from ..guard.runtime import FQCN, POLICY_ENV

        request["logits_processors"] = [FQCN]
        env = {POLICY_ENV: str(Path(guard).resolve())}
    return run_vllm(model_path, request, echo=echo, env=env)
