"""Runs cached by a hash of everything that determines them.

`cached_output_dir(cfg)` maps a config to `$UNLEARN_CACHE/runs/<name>-<hash>`; the hash
covers the resolved config (all but `output_dir`) and, for a local base model, the
fingerprint of its manifest/config, so a changed base model never reuses a stale run."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

from ..config import to_dict
from ..files import json_digest
from ..models.catalog import cache_root

RUN_MANIFEST = "run.json"  # written last into a finished run; its presence means "complete"


def is_finished(run_dir: str | Path) -> bool:
    return (Path(run_dir) / RUN_MANIFEST).is_file()


def config_hash(cfg) -> str:
    data = to_dict(dataclasses.replace(cfg, output_dir=""))
    model = Path(cfg.model)
    if cfg.model.startswith("run:"):  # the cached output of another config: fingerprint what it is now
        from ..models.loading import resolve_model

        model = Path(resolve_model(cfg.model))
    if model.is_dir():  # a local base model (e.g. a cached target): fingerprint its run record
        for name in (RUN_MANIFEST, "unlearnkit_manifest.json", "config.json"):
            if (model / name).is_file():
                data["model_fingerprint"] = hashlib.sha256((model / name).read_bytes()).hexdigest()
                break
    return json_digest(data, length=12)


def cached_output_dir(cfg, name: str) -> Path:
    return cache_root() / "runs" / f"{name}-{config_hash(cfg)}"


def train_cached(config_path: str, overrides: list[str] | None = None, log=print) -> Path:
    """Run a training config into its cache directory, reuse it if finished, resume it if
    an interruption left it half-done. Returns the finished run's directory."""
    from ..config import load_config
    from .config import TrainConfig
    from .run import run_training

    cfg = load_config(TrainConfig, config_path, overrides)
    cfg = dataclasses.replace(cfg, output_dir=str(cached_output_dir(cfg, Path(config_path).stem)))
    if is_finished(cfg.output_dir):
        log(f"(cached) {cfg.output_dir}")
        return Path(cfg.output_dir)
    return run_training(cfg, resume=True, log=log)
