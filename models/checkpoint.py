"""Load a checkpoint directory (or hub id), fingerprint it, and decode with it: what a model reference
resolves to. No catalog or cache here (loading.py resolves references, fetch.py builds catalog checkpoints
and probes them through this module)."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

from ..data.formatting import prompt_text
from ..errors import ModelError

WEIGHT_SUFFIXES = (".safetensors", ".bin")


def model_fingerprint(path: str) -> str:
    """sha256[:16] of a local checkpoint's weight files and config.json (names and bytes, in name order);
    `hub:<id>` for a hub model. The key part of every cache that depends on weights: training runs on a
    local base (training/cache.py), evaluations and compare's stages. Read once per process while the files'
    (name, size, mtime_ns, inode) stay the same, so weights re-saved in place are read again."""
    p = Path(path)
    if not p.is_dir():
        return f"hub:{path}"
    files = [f for f in sorted(p.iterdir()) if f.suffix in WEIGHT_SUFFIXES or f.name == "config.json"]
    stats = tuple((f.name, s.st_size, s.st_mtime_ns, s.st_ino) for f in files for s in (f.stat(),))
    return _files_digest(str(p.resolve()), stats)


@functools.lru_cache(maxsize=32)
def _files_digest(root: str, stats: tuple) -> str:
    h = hashlib.sha256()
    for name, *_ in stats:
        h.update(name.encode())
        with open(Path(root) / name, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
    return h.hexdigest()[:16]


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.chat_template is None:
        raise ModelError(f"{path}: the tokenizer has no chat template")
    return tokenizer


def load_checkpoint(path: str, dtype=None, device: str | None = None, ref: str | None = None):
    """(model, tokenizer) from a resolved `path`, in eval mode; float32 unless `dtype` says otherwise.
    `ref`: what the user wrote, for the error message."""
    import torch
    from transformers import AutoModelForCausalLM

    try:
        tokenizer = load_tokenizer(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or torch.float32)
    except ModelError:
        raise
    except Exception as exc:  # noqa: BLE001 - hub/IO errors of many types become one message
        raise ModelError(f"could not load model {ref or path!r} from {path!r}: {type(exc).__name__}: {exc}") from None
    if device:
        model.to(device)
    model.eval()
    return model, tokenizer


def greedy_generate(model, tokenizer, prompts: list[list[int]], max_tokens: list[int], batch_size: int = 16,
                    progress=None) -> list[str]:
    """Batched greedy decoding of token-id prompts with left padding (the transformers engine)."""
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
            ids[r, width - len(prompts[i]):] = torch.tensor(list(prompts[i]))
            mask[r, width - len(prompts[i]):] = 1
        with torch.inference_mode():
            out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=False,
                                 max_new_tokens=max(max_tokens[i] for i in idx), pad_token_id=pad)
        for r, i in enumerate(idx):
            texts[i] = tokenizer.decode(out[r, width:width + max_tokens[i]], skip_special_tokens=True)
        if progress is not None:
            progress(len(idx))
    return texts


def generate_answers(model, tokenizer, questions: list[str], max_new_tokens: int = 48,
                     batch_size: int = 16) -> list[str]:
    """Greedy chat answers (demos and probes; evaluation generates through evaluation/generation.py)."""
    prompts = [tokenizer(prompt_text(tokenizer, q), add_special_tokens=False)["input_ids"] for q in questions]
    texts = greedy_generate(model, tokenizer, prompts, [max_new_tokens] * len(prompts), batch_size)
    return [t.strip() for t in texts]
