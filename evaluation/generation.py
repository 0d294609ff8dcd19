"""Greedy generation for evaluation: vLLM (default: the engine users deploy) or transformers.

Prompts arrive as token ids, built once by the harness with the same chat template the
teacher-forced metrics use, so both kinds of metric see identical prompts."""

from __future__ import annotations

from typing import Sequence


def default_dtype(dtype: str) -> str:
    """`auto`: bf16 on CUDA, fp32 on CPU (bf16 is emulated and ~100x slower on CPUs without AVX512-BF16)."""
    if dtype != "auto":
        return dtype
    import torch

    return "bfloat16" if torch.cuda.is_available() else "float32"


def generate_vllm(model_path: str, prompts: Sequence[Sequence[int]], max_tokens: Sequence[int],
                  dtype: str = "auto", echo: bool = True) -> list[str]:
    from .vllm_generate import run_vllm

    longest = max(len(p) + m for p, m in zip(prompts, max_tokens))
    request = {"prompt_token_ids": [list(p) for p in prompts], "max_tokens": list(max_tokens),
               "dtype": default_dtype(dtype), "max_model_len": max(512, longest)}
    return run_vllm(model_path, request, echo=echo)["texts"]


def generate_transformers(model, tokenizer, prompts: Sequence[Sequence[int]], max_tokens: Sequence[int],
                          batch_size: int = 16, progress=None) -> list[str]:
    """Batched greedy decoding with left padding; same outputs as vLLM up to numerics."""
    import torch

    order = sorted(range(len(prompts)), key=lambda i: (max_tokens[i], len(prompts[i])))
    texts: list[str] = [""] * len(prompts)
    pad = tokenizer.pad_token_id
    device = next(model.parameters()).device
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        width = max(len(prompts[i]) for i in idx)
        ids = torch.full((len(idx), width), pad, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for r, i in enumerate(idx):
            p = list(prompts[i])
            ids[r, width - len(p):] = torch.tensor(p)
            mask[r, width - len(p):] = 1
        with torch.inference_mode():
            out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=False,
                                 max_new_tokens=max(max_tokens[i] for i in idx), pad_token_id=pad)
        for r, i in enumerate(idx):
            new = out[r, width:width + max_tokens[i]]
            texts[i] = tokenizer.decode(new, skip_special_tokens=True)
        if progress is not None:
            progress(len(idx))
    return texts
