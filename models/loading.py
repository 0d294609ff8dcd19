"""Load a model reference (catalog name, local checkpoint, or hub id; checkpoint.py does the loading).

`--model` references are resolved by training/cache.py `resolve_model`, the one public resolver: it
adds `run:CONFIG.yaml` (a cached training run, the training side's) to `_resolve_base` here, which
knows the references models/ can resolve without training/ (models/ imports nothing from training/)."""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import ModelError  # noqa: F401 - re-exported
from .catalog import CATALOG, model_dir
from .checkpoint import generate_answers, greedy_generate, load_checkpoint, load_tokenizer  # noqa: F401 - re-exported
from .fetch import fetch, is_fetched

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _resolve_base(ref: str, fetch_missing: bool = True) -> str:
    """Return something `from_pretrained` accepts: a local directory or a hub id.

    - a catalog name (`smollm2`) is fetched into the cache on first use;
    - an existing directory must hold a `config.json`;
    - `owner/name` that is not a local path is treated as a hub id (loading reports
      if the hub cannot be reached).
    Callers use training/cache.py `resolve_model`, which also resolves `run:CONFIG.yaml`."""
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


def load_model(ref: str, dtype=None, device: str | None = None):
    """(model, tokenizer) of a catalog name, local checkpoint or hub id (a `run:` reference resolved first by
    training/cache.py `resolve_model`), in eval mode; float32 on CPU unless `dtype` says otherwise."""
    return load_checkpoint(_resolve_base(ref), dtype, device, ref)
