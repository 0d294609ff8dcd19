"""`unlearn compare` and `unlearn attack`: build every system, measure each the same way, report.

For each system in the config (a progress bar across them): build or reuse its checkpoint and
guard policy, then measure metrics (`compare`), attacks and serving cost, and the weights attacks
(relearning, benign relearning, quantization: the ATTACKS of kind weights). A system that fails
is recorded with the reason and the others are still measured. `results.json` is rewritten after
every system, and every part is cached, so an interrupted comparison picks up where it stopped.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path
from typing import Optional, Sequence

from ..config import load_config, to_dict
from ..errors import ConfigError, DataError, one_line
from ..evaluation.attacks import build_probes, spread
from ..evaluation.config import EvalConfig
from ..evaluation.results import EvalResult, Summary
from ..evaluation.summary import Reference, reference_from_result, summarize
from ..files import write_json_atomic
from .config import CompareConfig, System, parse_system
from .attack_results import ATTACK_RESULTS, attack_from_json
from .seeds import config_seed, own_run, seed_runs


def load_compare_config(path: str, overrides: Optional[list[str]] = None) -> CompareConfig:
    cfg = load_config(CompareConfig, path, overrides)
    cfg.validate()
    return cfg


def out_dir(cfg: CompareConfig) -> Path:
    return Path(cfg.out_dir or f"runs/compare/{cfg.name}")


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def attack_sets(cfg: CompareConfig, ecfg: EvalConfig):
    """(forget items, probes) for the config: probes on the attacked forget items and on matched
    neighbour (retain) items."""
    from ..evaluation.benchmarks import build_tasks

    tasks = build_tasks(ecfg)
    forget = next((t for t in tasks if t.role == "forget" and t.kind == "qa"), None)
    if forget is None:
        raise DataError(f"benchmark {ecfg.benchmark!r} has no forget QA set to attack")
    retain = next((t for t in tasks if t.role == "retain" and t.kind == "qa"), None)
    probes = build_probes(forget.items, "forget", cfg.attacks.names, picked_items(cfg, forget.items),
                          cfg.attacks.all_jailbreaks)
    if retain is not None and cfg.attacks.neighbours:
        probes += build_probes(retain.items, "neighbour", cfg.attacks.names,
                               spread(len(retain.items), cfg.attacks.neighbours), cfg.attacks.all_jailbreaks)
    return tasks, forget.items, probes


def picked_items(cfg: CompareConfig, forget) -> list[int]:
    """The attacked forget items (prompt probes, quantization, benign relearning)."""
    return spread(len(forget), cfg.attacks.forget_items)


def benign_pool(tasks) -> list:
    """The benchmark's retain QA items (the benign relearning attack's material), else [] ."""
    retain = next((t for t in tasks if t.role == "retain" and t.kind == "qa"), None)
    return list(retain.items) if retain is not None else []


def guard_mode(policy: str) -> dict:
    """How the policy treats what it matches: strict (withheld) or calibrated (lowered by its soft mask); a
    corpus policy's corpus_mode too (takedown: quotes withheld, facts answered; forget: neither)."""
    from ..guard.policy import read_meta

    meta = read_meta(policy)
    calibrated = meta["config"].get("mode") == "calibrated"
    corpus = {"corpus_mode": meta["corpus"].get("mode")} if meta.get("corpus") else {}
    return {"mode": "calibrated" if calibrated else "strict",
            "soft_mask": meta["calibration"].get("soft_mask") if calibrated else None, **corpus}


class StageClock:
    """Wall seconds per stage of measuring one system, each from the end of the one before (a cached
    stage shows as the seconds it took to read back)."""

    def __init__(self):
        self.stages: dict[str, float] = {}
        self._last = time.time()

    def lap(self, stage: str) -> None:
        now = time.time()
        self.stages[stage] = round(now - self._last, 1)
        self._last = now


def measure_system(system: System, cfg: CompareConfig, ecfg: EvalConfig, tasks, forget, probes,
                   stages: Sequence[str], work: Path, log=_stderr) -> dict:
    from .build import checkpoint, guard_policy, run_record
    from .measure import WEIGHT_ATTACKS, AttackTarget, agent_system, engine_metrics, engine_system
    from .sampling import SAMPLING_ATTACKS

    started = time.time()
    clock = StageClock()
    path = checkpoint(system, cfg, log=log)
    out: dict = {"status": "ok", "system": system.name, "kind": system.kind, "base": system.base,
                 "checkpoint": path, "training": run_record(path), "stage_seconds": clock.stages}
    clock.lap("checkpoint")
    policy = None
    if system.guard or system.agents:
        policy, info = guard_policy(cfg.guard.variant(system.guard_variant), path, log=log)
        out["guard"] = {"policy": policy, **info, **guard_mode(policy)}
        clock.lap("guard")
    engine_policy = policy if system.guard else None
    if system.agents:
        engine = engine_metrics(ecfg, path, engine_policy, log=log) if "metrics" in stages else None
        measured = agent_system(system, path, policy, engine, tasks, ecfg, probes, cfg, work, log=log)
        out["metrics"], out["attacks"] = measured["metrics"], measured["attacks"]
    else:
        out["metrics"], out["attacks"] = engine_system(ecfg, path, engine_policy, probes, cfg,
                                                       want_metrics="metrics" in stages, log=log)
    clock.lap("metrics and prompt attacks")
    target = AttackTarget(system, path, engine_policy, list(forget), benign_pool(tasks), picked_items(cfg, forget),
                          ecfg, cfg, log, front_policy=policy)
    measured_on_target = {**WEIGHT_ATTACKS, **SAMPLING_ATTACKS}
    for name in cfg.attacks.names:
        if name in measured_on_target:
            out[name] = measured_on_target[name](target)
            clock.lap(name)
    out["seconds"] = round(time.time() - started, 1)
    return out


def retain_reference(cfg: CompareConfig, ecfg: EvalConfig, results: dict,
                     log=_stderr) -> tuple[Optional[Reference], str]:
    """(the retain model's side of forget quality, reason when there is none)."""
    if not cfg.retain:
        return None, "no retain model in this comparison (config: retain: <model ref>), so forget quality has no reference"
    got = results.get("retain")
    if got is not None and got.get("status") != "ok":
        return None, f"the retain model failed: {got.get('reason')}"
    if got is not None and got.get("metrics"):
        return reference_from_result(got["metrics"], "retain"), ""
    try:   # not listed as a system: measure it as the reference only (cached)
        from .build import ensure_model
        from .measure import engine_metrics

        return reference_from_result(engine_metrics(ecfg, ensure_model(cfg.retain, log), None, log=log), "retain"), ""
    except Exception as exc:  # noqa: BLE001 - reported, never a number
        return None, f"the retain model could not be measured: {type(exc).__name__}: {exc}"


def summaries(cfg: CompareConfig, ecfg: EvalConfig, results: dict, log=_stderr) -> None:
    """Each measured system's headline metrics (forget quality against the retain model), and with
    `seeds:` the weight-level systems' other training seeds (compare/seeds.py)."""
    import dataclasses

    ref, reason = retain_reference(cfg, ecfg, results, log)
    sum_cfg = dataclasses.replace(ecfg, metrics=sorted(set(ecfg.metrics) | {"forget_quality", "model_utility"}))
    for res in results.values():
        if res.get("status") != "ok" or not res.get("metrics"):
            continue
        s = summarize(res["metrics"], sum_cfg, ref)
        res["summary"] = s.without_reference(reason) if ref is None else s
    if cfg.seeds:
        _seed_spread(cfg, ecfg, sum_cfg, ref, results, log)


def _seed_spread(cfg: CompareConfig, ecfg: EvalConfig, sum_cfg: EvalConfig, ref: Optional[Reference], results: dict,
                 log) -> None:
    """`seeds` of each measured weight-level system: its own run first, then the other seeds'."""
    for res in results.values():
        system = parse_system(res["system"], cfg)
        if res.get("status") != "ok" or not res.get("summary") or system.kind != "weight":
            continue
        try:
            runs = [own_run(res, config_seed(cfg.methods[system.base])), *seed_runs(system, cfg, ecfg, sum_cfg, ref, log)]
            res["seeds"] = [r.to_json() for r in runs]
        except Exception as exc:  # noqa: BLE001 - reported beside the system's own numbers, never a number
            reason = one_line(exc)
            log(f"!! {system.name}: the other seeds failed: {reason}")
            res["seeds_error"] = reason


def _compact(res: dict) -> dict:
    """What results.json keeps of a system (per-item records and per-probe replies go to systems/<name>.json),
    from its full JSON (`_system_json`): the attacks' `compact()` forms (compare/results.py)."""
    out = {k: v for k, v in res.items() if k not in ("metrics", *ATTACK_RESULTS)}
    if res.get("metrics"):
        out["aggregates"] = {n: t["aggregate"] for n, t in res["metrics"]["tasks"].items()}
        out["timing"] = res["metrics"].get("timing")
        if "guard" in res["metrics"]:
            out["guard_flagged_rate"] = res["metrics"]["guard"].get("flagged_rate")
    for name in ATTACK_RESULTS:
        if res.get(name):
            out[name] = attack_from_json(name, res[name]).compact().to_json()
    return out


def provenance(cfg: CompareConfig, ecfg: EvalConfig, tasks, probes) -> dict:
    from ..evaluation.harness import _versions

    return {"config": to_dict(cfg), "eval_config": to_dict(ecfg), "versions": _versions(),
            "data": {t.name: {"source": t.source, "items": len(t.items), "fingerprint": t.fingerprint()} for t in tasks},
            "probes": {"n": len(probes), "forget": sum(p.role == "forget" for p in probes),
                       "neighbour": sum(p.role == "neighbour" for p in probes)},
            "started": time.strftime("%Y-%m-%d %H:%M:%S")}


def _earlier(work: Path, cfg: CompareConfig, stages: Sequence[str]) -> dict:
    """Full results of systems measured by an earlier run of this comparison that are still in it."""
    wanted = {parse_system(s, cfg).name for s in cfg.systems}
    suffix = ".json" if "metrics" in stages else ".attack.json"
    out = {}
    for name in sorted(wanted):
        f = work / "systems" / f"{name}{suffix}"
        if f.is_file():
            out[name] = _system_from_json(json.loads(f.read_text()), str(f))
    return out


def _system_json(res: dict) -> dict:
    """A system's full results as JSON (systems/<name>.json): its evaluation, summary and attack results
    written out, the rest (status, names, checkpoint, training and guard records) as it is."""
    return {k: (v.to_json() if hasattr(v, "to_json") else v) for k, v in res.items()}


def _system_from_json(doc: dict, what: str) -> dict:
    out = {**doc, "metrics": EvalResult.from_json(doc["metrics"], f"{what}: metrics") if doc.get("metrics") else None}
    if isinstance(doc.get("summary"), dict):
        out["summary"] = Summary.from_json(doc["summary"])
    return out


def run_compare(cfg: CompareConfig, stages: Sequence[str] = ("metrics", "attacks"),
                only: Optional[Sequence[str]] = None, report: bool = True, log=_stderr) -> dict:
    from tqdm.auto import tqdm

    from ..evaluation.systems import model_fingerprint

    ecfg = load_config(EvalConfig, cfg.eval)
    ecfg.validate()
    systems = [parse_system(s, cfg) for s in (only or cfg.systems)]
    tasks, forget, probes = attack_sets(cfg, ecfg)
    work = out_dir(cfg)
    (work / "systems").mkdir(parents=True, exist_ok=True)
    (work / "logs").mkdir(parents=True, exist_ok=True)
    doc = {"name": cfg.name, "provenance": provenance(cfg, ecfg, tasks, probes), "systems": {}}
    # a run on a subset of the systems (or attacks alone) adds to what the comparison measured before
    results_file = work / ("results.json" if "metrics" in stages else "attack.json")
    results = _earlier(work, cfg, stages)
    started = time.time()
    bar = tqdm(systems, desc="systems", unit="system", position=0)
    for n, system in enumerate(bar, 1):
        bar.set_postfix_str(system.name)
        log(f"\n== [{n}/{len(systems)}] {system.name}")
        try:
            res = measure_system(system, cfg, ecfg, tasks, forget, probes, stages, work, log=log)
        except Exception as exc:  # noqa: BLE001 - a failed system is reported, the others still measured
            detail = traceback.format_exc()
            (work / "logs" / f"{system.name}.error.log").write_text(detail)
            reason = one_line(exc)
            log(f"!! {system.name} failed: {reason} (traceback: {work / 'logs' / (system.name + '.error.log')})")
            res = {"status": "failed", "system": system.name, "kind": system.kind, "reason": reason}
        results[system.name] = res
        if res["status"] == "ok":
            write_json_atomic(work / "systems" / (f"{system.name}.json" if "metrics" in stages
                                                   else f"{system.name}.attack.json"), _system_json(res))
        doc["systems"] = {k: _compact(_system_json(v)) for k, v in results.items()}
        write_json_atomic(results_file, doc)
    bar.close()
    if "metrics" in stages:
        summaries(cfg, ecfg, results, log)
    order = [parse_system(s, cfg).name for s in cfg.systems]
    results = {k: results[k] for k in sorted(results, key=lambda n: order.index(n) if n in order else len(order))}
    doc["systems"] = {k: _compact(_system_json(v)) for k, v in results.items()}
    doc["fingerprints"] = {k: model_fingerprint(v["checkpoint"]) for k, v in results.items() if v.get("checkpoint")}
    doc["wall_s"] = round(time.time() - started, 1)
    write_json_atomic(results_file, doc)
    if report:
        from .report import write_report

        write_report(doc, work)
    return doc


def all_ok(doc: dict) -> bool:
    """Every system of the comparison was measured (the commands' exit status)."""
    return all(r.get("status") == "ok" for r in doc["systems"].values())


def check_only(names: Sequence[str], cfg: CompareConfig) -> list[str]:
    out = [parse_system(n, cfg).name for n in names]
    listed = {parse_system(s, cfg).name for s in cfg.systems}
    missing = [n for n in out if n not in listed]
    if missing:
        raise ConfigError(f"system(s) {missing} are not in this comparison; its systems: {cfg.systems}")
    return out
