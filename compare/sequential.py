"""Sequential deletion requests (`unlearn sequential --config <compare config>`): forget sets
arriving one after another, each unlearnt from the checkpoint the previous one left.

    request_sets      the requests' QA items: `sequential.requests` (data specs, in order) or
                      `sequential.split` (one spec, one request per person it is about, in order)
    request_configs   request k's training config, written to <out>/sequential/: `method`'s config
                      with data.forget = request k's set and `model: run:<request k-1's config>`
                      (request 1 starts where the method's config starts: the target), so the
                      training cache chains and resumes them like any `run:` model
    live_targets      what a deployment adds to the agent front without a restart after request k
                      (POST /admin/targets: the request's people with their facts)
    per_request       after each request, on the benchmark's forget set split by request: mean
                      answer probability and forget quality (KS of the truth ratios against the
                      retain model's on the same items), plus model utility and forget quality
                      over all requests so far

The steps go into a results doc in compare's layout ("systems": the target then "<method>@k",
each with its summary, so the headline table shows them) with a "sequential" part the report's
sequential table and plot read; `write_report` writes it to <out>/sequential/.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Optional, Sequence

import yaml

from ..config import load_config, to_dict
from ..data.sources import load_spec
from ..errors import ConfigError, DataError
from ..evaluation.attacks import subjects
from ..evaluation.config import EvalConfig
from ..evaluation.results import EvalResult, QARecord, Summary, column
from ..evaluation.summary import reference_from_result, summarize
from ..files import write_json_atomic
from .config import CompareConfig

STEP_SEPARATOR = "@"     # "<method>@k": the checkpoint after request k


def request_sets(cfg: CompareConfig) -> list[tuple[str, list]]:
    """[(label, QA items)] per request, in arrival order."""
    seq = cfg.sequential
    if seq.requests:
        out = []
        for spec in seq.requests:
            items = load_spec(spec)
            if not items:
                raise DataError(f"sequential.requests: {spec!r} holds no items")
            out.append((spec, items))
        return out
    items = load_spec(seq.split)
    people = subjects(items)
    order = list(dict.fromkeys(p for p in people if p))
    if len(order) < 2 or any(p is None for p in people):
        raise ConfigError(f"sequential.split: {seq.split!r} must be about two or more people, each item about one "
                          f"(found {order or 'none'}); give `requests: [spec, ...]` instead")
    return [(person, [r for r, p in zip(items, people) if p == person]) for person in order]


def _write_if_changed(path: Path, text: str) -> None:
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)


def request_configs(cfg: CompareConfig, sets: Sequence[tuple[str, list]], work: Path) -> list[Path]:
    """Request k's training config (and, for a split, its forget set as JSON lines) in `work`."""
    from ..training.config import TrainConfig

    work.mkdir(parents=True, exist_ok=True)
    method_config = Path(cfg.methods[cfg.sequential.method])
    if not method_config.is_file():
        raise ConfigError(f"methods.{cfg.sequential.method}: training config {str(method_config)!r} does not exist")
    base = yaml.safe_load(method_config.read_text())
    model, out = base["model"], []
    for k, (label, items) in enumerate(sets, 1):
        spec = label
        if cfg.sequential.split:     # the person's items as a file the training config can name
            data = work / f"request{k}.jsonl"
            _write_if_changed(data, "".join(json.dumps(r.to_json()) + "\n" for r in items))
            spec = f"file:{data}"
        doc = copy.deepcopy(base)
        doc["model"] = model
        doc["data"] = {**doc.get("data", {}), "forget": spec}
        doc["output_dir"] = str(work / f"request{k}")
        path = work / f"{cfg.sequential.method}-request{k}.yaml"
        _write_if_changed(path, f"# request {k} of {len(sets)} ({label}), written by `unlearn sequential` from "
                                f"{method_config}\n" + yaml.safe_dump(doc, sort_keys=False))
        load_config(TrainConfig, path)     # refused here, naming the file, if the result is no valid config
        out.append(path)
        model = f"run:{path}"
    return out


def live_targets(items: Sequence) -> list[dict]:
    """The agent front's live targets for one request (POST /admin/targets, one per person)."""
    from ..agents.store import MAX_FACTS

    out: dict[str, list[str]] = {}
    for r, person in zip(items, subjects(items)):
        if person:
            out.setdefault(person, []).append(r.answer)
    return [{"name": p, "facts": facts[:MAX_FACTS]} for p, facts in out.items()]


# ----------------------------------------------------------------------------- per-request numbers
def _by_question(result: EvalResult) -> dict[str, QARecord]:
    return {it.question: it for it in result.tasks["forget"].items if it.question}


def per_request(result: EvalResult, retain_result: Optional[EvalResult],
                sets: Sequence[tuple[str, list]]) -> list[dict]:
    """Per request: forget items found in the benchmark, their mean answer probability and forget
    quality against the retain model's truth ratios on the same items."""
    from ..evaluation.metrics.tofu import forget_quality

    mine, ref = _by_question(result), _by_question(retain_result) if retain_result else {}
    out = []
    for label, items in sets:
        rows = [mine[r.question] for r in items if r.question in mine]
        probs, tr = column(rows, "probability"), column(rows, "truth_ratio")
        tr_ref = column([ref[r.question] for r in items if r.question in ref], "truth_ratio")
        out.append({"request": label, "items": len(rows),
                    "answer_probability": sum(probs) / len(probs) if probs else None,
                    "forget_quality": forget_quality(tr, tr_ref)["forget_quality"] if tr and tr_ref else None})
    return out


def _cumulative(result: EvalResult, retain_result: Optional[EvalResult], sets: Sequence[tuple[str, list]], upto: int) -> Optional[float]:
    """Forget quality over the forget items of requests 1..upto (what should be forgotten by now)."""
    return per_request(result, retain_result, [("so far", [r for _, items in sets[:upto] for r in items])])[0][
        "forget_quality"]


def _step(name: str, base: str, path: str, result: EvalResult, summary: Summary, requests: list[dict], done: int,
          cumulative: Optional[float], guard: Optional[dict] = None) -> dict:
    """One checkpoint of the chain (`guard`: the policy over requests 1..done it is served behind, with its
    build record) as a system of compare's results layout."""
    from .build import run_record

    kind = "reference" if done == 0 else "guard" if guard else "weight"
    training = {"train_seconds": guard.get("build_seconds")} if guard else run_record(path) if done else {}
    return {"status": "ok", "system": name, "kind": kind, "base": base, "checkpoint": path, "training": training,
            "summary": summary.to_json(), "aggregates": {n: t.aggregate for n, t in result.tasks.items()},
            "sequential": {"after_request": done, "requests": requests, "forget_quality_so_far": cumulative},
            **({"guard": guard} if guard else {})}


def guard_over(cfg: CompareConfig, sets: Sequence[tuple[str, list]], upto: int, work: Path):
    """The comparison's guard spec with requests 1..upto's items as its forget set (written to `work`)."""
    import dataclasses

    if cfg.guard is None:
        raise ConfigError("sequential.guard: the comparison config has no `guard:` section to build the guard with")
    data = work / f"guard-requests1-{upto}.jsonl"
    _write_if_changed(data, "".join(json.dumps(r.to_json()) + "\n" for _, items in sets[:upto] for r in items))
    return dataclasses.replace(cfg.guard, forget=f"file:{data}")


def _check_sequential(cfg: CompareConfig) -> None:
    if cfg.sequential.guard and cfg.guard is None:
        raise ConfigError("sequential.guard: the comparison config has no `guard:` section to build the guard with")
    if not cfg.sequential.enabled:
        raise ConfigError("this comparison config has no `sequential:` section; add "
                          "`sequential: {method: <a key of methods>, requests: [spec, ...]}` (or `split: <spec>`)")


def _provenance(cfg: CompareConfig, ecfg: EvalConfig, sets, configs, work: Path) -> dict:
    """The configs, and per request its items, training config and live-targets file."""
    return {"config": to_dict(cfg), "eval_config": to_dict(ecfg),
            "requests": [{"request": label, "items": len(items), "training_config": str(p),
                          "live_targets": str(work / f"request{k}.targets.json")}
                         for k, ((label, items), p) in enumerate(zip(sets, configs), 1)],
            "started": time.strftime("%Y-%m-%d %H:%M:%S")}


def run_sequential(cfg: CompareConfig, log=print, report: bool = True) -> dict:
    """Train the chain of requests (cached), measure after each, write results and the report."""
    import dataclasses

    from ..training.run import train_cached
    from .build import ensure_model, guard_policy
    from .measure import engine_metrics
    from .run import out_dir

    _check_sequential(cfg)
    ecfg = load_config(EvalConfig, cfg.eval)
    ecfg.validate()
    work = out_dir(cfg) / "sequential"
    sets = request_sets(cfg)
    configs = request_configs(cfg, sets, work)
    log(f"sequential: {len(sets)} requests ({', '.join(label for label, _ in sets)}) with {cfg.sequential.method}")
    sum_cfg = dataclasses.replace(ecfg, metrics=sorted(set(ecfg.metrics) | {"forget_quality", "model_utility"}))
    retain_result = engine_metrics(ecfg, ensure_model(cfg.retain, log), None, log=log) if cfg.retain else None
    ref = reference_from_result(retain_result, "retain") if retain_result else None

    def measured(name: str, base: str, path: str, done: int, policy: Optional[str] = None,
                 guard: Optional[dict] = None) -> dict:
        result = engine_metrics(ecfg, path, policy, log=log)
        summary = summarize(result, sum_cfg, ref)
        if ref is None:
            summary = summary.without_reference("no retain model in this comparison (config: retain: <model ref>)")
        return _step(name, base, path, result, summary, per_request(result, retain_result, sets), done,
                     _cumulative(result, retain_result, sets, done) if done else None, guard)

    def guarded(k: int) -> dict:
        policy, info = guard_policy(guard_over(cfg, sets, k, work), target, log=log)
        return measured(f"target+guard{STEP_SEPARATOR}{k}", "target", target, k, policy, {"policy": policy, **info})

    started = time.time()
    target = ensure_model(cfg.target, log)
    steps = {"target": measured("target", "target", target, 0)}
    for k, path in enumerate(configs, 1):
        log(f"\n== request {k}/{len(configs)}: {sets[k - 1][0]}")
        checkpoint = str(train_cached(str(path), log=log))   # its run.json holds the training time
        name = f"{cfg.sequential.method}{STEP_SEPARATOR}{k}"
        if cfg.sequential.eval_each or k == len(configs):
            steps[name] = measured(name, cfg.sequential.method, checkpoint, k)
            if cfg.sequential.guard:
                steps[f"target+guard{STEP_SEPARATOR}{k}"] = guarded(k)
        write_json_atomic(work / f"request{k}.targets.json", {"targets": live_targets(sets[k - 1][1])})
    doc = {"name": f"{cfg.name}: sequential requests ({cfg.sequential.method})",
           "provenance": _provenance(cfg, ecfg, sets, configs, work), "systems": steps,
           "wall_s": round(time.time() - started, 1)}
    write_json_atomic(work / "results.json", doc)
    if report:
        from .report import write_report

        write_report(doc, work)
    return doc
