"""Resolve `--model` (catalog name, local checkpoint, or hub id) and load it."""

from __future__ import annotations

import re
from pathlib import Path

from ..data.formatting import prompt_text
from ..errors import ModelError  # noqa: F401 - re-exported
from .catalog import CATALOG, model_dir
from .fetch import fetch, is_fetched

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_model(ref: str, fetch_missing: bool = True) -> str:
    """Return something `from_pretrained` accepts: a local directory or a hub id.

    - a catalog name (`smollm2`) is fetched into the cache on first use;
    - an existing directory must hold a `config.json`;
    - `owner/name` that is not a local path is treated as a hub id (loading reports
      if the hub cannot be reached).
    `run:CONFIG.yaml` (a cached training run) is training/cache.py's `resolve_model`."""
    if ref.startswith("run:"):
        raise ModelError(f"{ref!r}: a run: reference is resolved by unlearnkit.training.cache.resolve_model")
    if ref in CATALOG:
        if is_fetched(ref):
            return str(model_dir(ref))
        if not fetch_missing:
            raise ModelError(f"model {ref!r} is not fetched yet; run `unlearn models fetch {ref}`")
        return str(fetch(ref))
    path = Path(ref).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"{ref!r} is a directory but holds no config.json (not a Hugging Face checkpoint)")
        return str(path)
    if path.exists():
        raise ModelError(f"{ref!r} is a file, not a checkpoint directory")
    if _HUB_ID.match(ref) and not ref.startswith((".", "/", "~")):
        return ref
    raise ModelError(
        f"model {ref!r} not found: give a catalog name {sorted(CATALOG)}, a local checkpoint "
        "directory, a hub id (owner/name), or run:CONFIG.yaml where a training run is accepted"
    )


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.chat_template is None:
        raise ModelError(f"{path}: the tokenizer has no chat template")
    return tokenizer


def load_model(ref: str, dtype=None, device: str | None = None):
    """(model, tokenizer) in eval mode; float32 on CPU unless `dtype` says otherwise."""
    import torch
    from transformers import AutoModelForCausalLM

    path = resolve_model(ref)
    try:
        tokenizer = load_tokenizer(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or torch.float32)
    except ModelError:
        raise
    except Exception as exc:  # noqa: BLE001 - hub/IO errors of many types become one message
        raise ModelError(f"could not load model {ref!r} from {path!r}: {type(exc).__name__}: {exc}") from None
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
