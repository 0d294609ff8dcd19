"""Runs cached by a hash of everything that determines them, and `run:` model references to them.

`cached_output_dir(cfg)` maps a config to `$UNLEARN_CACHE/runs/<name>-<hash>`; the hash
covers the resolved config (all but `output_dir`) and, for a local base model, the
fingerprint of its manifest/config and of its weights (models/checkpoint.py `model_fingerprint`:
their bytes), so a changed base model, weights re-saved in place included, never reuses a stale run. The
precision is hashed as the one the run will use on this machine (`auto` resolved), spelled so
that runs cached before `auto` was measured keep their hashes (precision.hashed_precision).
`resolve_model` is the one resolver of `--model` references: `run:CONFIG.yaml`, the cached output of that
training config (`unlearn train --cached`, training/run.py `train_cached`), and what models/loading.py
resolves without training/ (catalog name, local checkpoint, hub id)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..config import load_config, to_dict
from ..errors import ModelError
from ..files import json_digest, sha256_file
from ..models.catalog import cache_root
from ..models.checkpoint import model_fingerprint
from ..models.loading import _resolve_base
from ..models.precision import hashed_precision

RUN_MANIFEST = "run.json"  # written last into a finished run; its presence means "complete"
RUN_PREFIX = "run:"


def is_finished(run_dir: str | Path) -> bool:
    return (Path(run_dir) / RUN_MANIFEST).is_file()


def config_hash(cfg) -> str:
    data = to_dict(dataclasses.replace(cfg, output_dir=""))
    data["optim"]["precision"] = hashed_precision(cfg.optim.precision)  # what the run will use (precision.py)
    model = Path(cfg.model)
    if cfg.model.startswith(RUN_PREFIX):  # the cached output of another config: fingerprint what it is now
        model = Path(resolve_run(cfg.model[len(RUN_PREFIX):]))
    if model.is_dir():  # a local base model (e.g. a cached target): fingerprint its run record and weights
        for name in (RUN_MANIFEST, "unlearnkit_manifest.json", "config.json"):
            if (model / name).is_file():
                data["model_fingerprint"] = sha256_file(model / name)
                break
        data["weights_fingerprint"] = model_fingerprint(str(model))
    return json_digest(data, length=12)


def cached_output_dir(cfg, name: str) -> Path:
    return cache_root() / "runs" / f"{name}-{config_hash(cfg)}"


def resolve_model(ref: str, fetch_missing: bool = True) -> str:
    """What `from_pretrained` accepts for `--model`: `run:CONFIG.yaml` is the cached output of that
    training config; anything else is resolved by models/loading.py (catalog name, checkpoint, hub id)."""
    if ref.startswith(RUN_PREFIX):
        return resolve_run(ref[len(RUN_PREFIX):])
    return _resolve_base(ref, fetch_missing)


def resolve_run(config_path: str) -> str:
    """`configs/finetune/x.yaml` -> the cached output of that training config (it must be finished)."""
    from .config import TrainConfig   # imports the method registry, hence torch

    if not Path(config_path).is_file():  # shipped configs also resolve from outside the checkout
        shipped = Path(__file__).resolve().parents[1] / config_path
        config_path = str(shipped) if shipped.is_file() else config_path
    cfg = load_config(TrainConfig, config_path)
    out = cached_output_dir(cfg, Path(config_path).stem)
    if not is_finished(out):
        raise ModelError(f"model run:{config_path} is not built yet; run `unlearn train --cached --config {config_path}`")
    return str(out)
