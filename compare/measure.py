"""Measuring one system: metrics, attacks, serving cost, the weights attacks (relearning, benign
relearning, quantization). Each part cached by a hash of
everything that determines it (weights, policy files, agent config, prompts, settings), so an
interrupted comparison resumes where it stopped and a re-run only re-reads JSON.

Deployed paths:
    weights alone / +guard   offline vLLM (the guard as the engine's logits processor, exactly as
                             `unlearn serve --guard`); teacher-forced metrics through the guard's
                             mask and penalty (evaluation/harness.py)
    +agents                  `unlearn serve --agents` over HTTP; probability-based metrics are the
                             engine's (a text rewriter cannot change them), generation-based ones
                             (ROUGE, attacks) are the agents' replies
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import statistics
import time
from pathlib import Path
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from ..config import from_dict, to_dict
from ..data.formatting import prompt_text
from ..data.records import QA
from ..files import json_digest, write_json_atomic
from ..evaluation.attacks import Probe, benign_texts, keywords_of, relearn_split
from ..evaluation.benchmarks import Task
from ..evaluation.config import EvalConfig
from ..evaluation.generation import default_dtype
from ..evaluation.harness import cached_measure
from ..evaluation.leakage import ProbeScores, ScoredProbe, score_reply
from ..evaluation.measure import measure
from ..evaluation.metrics.means import finite_mean
from ..evaluation.results import EvalResult
from ..evaluation.scoring import Prompt, build_requests
from ..evaluation.systems import Batch, Generated, Guarded, Replayed, Weights, model_fingerprint, policy_identity
from ..models.catalog import cache_root
from ..models.loading import load_tokenizer
from ..training.cache import cached_output_dir
from . import endpoint
from .config import CompareConfig, System
from .attack_results import FinetuneResult, PromptAttacks, QuantizeResult, QuantRowResult, Serving, Skipped
from .systems import AgentFront


def _cache_file(kind: str, key_obj) -> Path:
    return cache_root() / "compare" / f"{kind}-{json_digest(key_obj)}.json"


def _cached(kind: str, key_obj, make, log=print) -> dict:
    """JSON cache in $UNLEARN_CACHE/compare/<kind>-<hash>.json (written atomically, last)."""
    path = _cache_file(kind, key_obj)
    if path.is_file():
        log(f"(cached) {kind}: {path.name}")
        return json.loads(path.read_text())
    out = make()
    write_json_atomic(path, out)
    return out


def policy_fingerprint(policy: Optional[str]) -> Optional[str]:
    """The compare caches' key part for a guard policy (None: unguarded)."""
    if not policy:
        return None
    return json_digest(policy_identity(json.loads((Path(policy) / "policy.json").read_text())))


def agents_fingerprint(cfg: CompareConfig) -> dict:
    text = Path(cfg.agents.config).read_text() if Path(cfg.agents.config).is_file() else cfg.agents.config
    return {"config": text, "set": list(cfg.agents.set), "max_model_len": cfg.agents.max_model_len}


def refusal_texts(policy: Optional[str], cfg: CompareConfig) -> list[str]:
    """The refusals this system's runtime parts answer with (counted as refusals, not leaks)."""
    out = []
    if policy:
        out.append(json.loads((Path(policy) / "policy.json").read_text())["config"]["refusal"])
    try:
        from ..agents.config import load_agent_config

        out.append(load_agent_config(cfg.agents.config, list(cfg.agents.set)).refusal)
    except Exception:   # noqa: BLE001 - an unreadable agent config fails the agent systems, not this
        pass
    return out


# ----------------------------------------------------------------------------- scoring attacks
def score_probes(probes: Sequence[Probe], replies: Sequence[str], cfg: CompareConfig,
                 refusals: list[str]) -> ProbeScores:
    return ProbeScores.of([
        ScoredProbe(p.role, p.category, p.variant, p.item, p.prompt, reply,
                    score_reply(reply, p.gold, p.keywords, refusals, cfg.attacks.leak_rouge, cfg.attacks.leak_keywords))
        for p, reply in zip(probes, replies)])


def _serving(n_tokens: int, seconds: float, latency: Sequence[float], n_requests: int) -> dict:
    """The serving figures of a generated batch (results.py `Serving`)."""
    return {"requests": n_requests, "output_tokens": n_tokens, "batch_seconds": round(seconds, 2),
            "tokens_per_s": round(n_tokens / seconds, 2) if seconds > 0 else None,
            "latency_median_s": round(statistics.median(latency), 3) if latency else None,
            "latency_requests": len(latency)}


def prompt_attacks(probes: Sequence[Probe], cached: dict, cfg: CompareConfig, refusals: list[str]) -> PromptAttacks:
    """The prompt attacks from their cached replies and serving figures (scored now: scores are not cached)."""
    return PromptAttacks(score_probes(probes, cached["replies"], cfg, refusals), serving=Serving.from_json(cached["serving"]))


# ----------------------------------------------------------------------------- engine systems
def eval_config(ecfg: EvalConfig, path: str, policy: Optional[str]) -> EvalConfig:
    """The evaluation config's settings (its dtype included: `unlearn eval` results are reused as
    they are) with this system's weights and guard; a guard is measured through vLLM, as deployed."""
    out = dataclasses.replace(ecfg, model=path, guard=policy, retain_eval=None,
                              engine="vllm" if policy else ecfg.engine)
    out.validate()
    return out


def engine_metrics(ecfg: EvalConfig, path: str, policy: Optional[str], log=print) -> EvalResult:
    """The system's metrics: the cached evaluation of `eval_config` (evaluation/harness.py)."""
    return cached_measure(eval_config(ecfg, path, policy), log=log).result


def probe_batch(tokenizer, probes: Sequence[Probe], cfg: CompareConfig) -> Batch:
    """The attack probes as one generation batch (chat prompts), its first `latency_requests` timed alone."""
    return Batch([Prompt(tokenizer(prompt_text(tokenizer, p.prompt), add_special_tokens=False)["input_ids"],
                         cfg.attacks.max_new_tokens, p.prompt) for p in probes],
                 latency=min(cfg.latency_requests, len(probes)))


def _probe_record(out: Generated, n: int) -> dict:
    """What the attack cache keeps of the probes' generation: replies and the serving figures."""
    return {"replies": out.texts, "serving": _serving(sum(out.tokens), out.seconds, out.latency_s, n)}


def engine_system(ecfg: EvalConfig, path: str, policy: Optional[str], probes: Sequence[Probe], cfg: CompareConfig,
                  want_metrics: bool = True, log=print) -> tuple[Optional[EvalResult], PromptAttacks]:
    """(metrics, attacks) through offline vLLM, with the guard's processor when `policy`. When neither is
    cached, one engine run generates the probes (one batch, timed: the serving figures, then the first
    `latency_requests` one at a time), then the metric prompts."""

    key = {"stage": "attacks", "model": model_fingerprint(path), "policy": policy_fingerprint(policy),
           "prompts": [p.prompt for p in probes], "max_new_tokens": cfg.attacks.max_new_tokens,
           "dtype": cfg.dtype, "latency": cfg.latency_requests}
    tok = load_tokenizer(path)
    batch = probe_batch(tok, probes, cfg)
    metrics, probed = None, None
    if want_metrics:
        mcfg = eval_config(ecfg, path, policy)
        # the probes ride in the metrics' engine run where they would run alike (vLLM, same dtype)
        alike = mcfg.engine == "vllm" and default_dtype(mcfg.dtype) == default_dtype(cfg.dtype)
        got = cached_measure(mcfg, log=log,
                             extra=[batch] if probes and alike and not _cache_file("attacks", key).is_file() else ())
        metrics, probed = got.result, (got.extra[0] if got.extra else None)

    def make():
        if not probes:
            return {"replies": [], "serving": {}}
        if probed is not None:
            return _probe_record(probed, len(probes))
        log(f"vLLM{' + guard' if policy else ''}: {len(probes)} attack probes")
        return _probe_record(_attacked_system(path, tok, policy, "vllm", cfg.dtype).generate([batch])[0], len(probes))

    # replies are cached, scores are not: a change of scoring rules never needs the engine again
    got = _cached("attacks", key, make, log)
    return metrics, prompt_attacks(probes, got, cfg, refusal_texts(policy, cfg))


# ----------------------------------------------------------------------------- agent systems
def _agent_serving(out: Generated, server, n: int) -> dict:
    routes = [r.get("route") or r.get("path") for r in out.records]
    calls = [r.get("llm_calls") for r in out.records if r.get("path") != "passthrough"]
    calls = [c for c in calls if c is not None]
    return {**_serving(sum(out.tokens), out.seconds, out.latency_s, n), "server_start_s": round(server.start_s, 1),
            "routes": {k: routes.count(k) for k in sorted(set(map(str, routes)))},
            "llm_calls_per_flagged": round(statistics.mean(calls), 2) if calls else None}


def agent_system(system: System, path: str, policy: str, engine_result: Optional[EvalResult], tasks, ecfg: EvalConfig,
                 probes: Sequence[Probe], cfg: CompareConfig, workdir: Path, log=print) -> dict:
    """Metrics (when `engine_result` is given: the engine's numbers, generation replaced by the front's
    replies) and attacks through `unlearn serve --agents` (one server for both)."""
    from tqdm.auto import tqdm

    tok = load_tokenizer(path)
    gen = build_requests(tasks, tok, ecfg).gen if engine_result is not None else []
    jobs = [g for g in gen if g.prompt.question is not None]
    key = {"stage": "agents", "system": system.name, "model": model_fingerprint(path),
           "policy": policy_fingerprint(policy), "agents": agents_fingerprint(cfg), "eval": to_dict(eval_config(ecfg, "", None)),
           "jobs": [g.prompt.question for g in jobs], "prompts": [p.prompt for p in probes],
           "max_new_tokens": cfg.attacks.max_new_tokens, "latency": cfg.latency_requests, "dtype": cfg.dtype}

    def make():
        with endpoint.AgentServer(path, policy, workdir / "logs" / f"{system.name}.server.log", agents_only=not system.guard,
                         dtype=default_dtype(cfg.dtype), max_model_len=cfg.agents.max_model_len,
                         config=cfg.agents.config, overrides=cfg.agents.set) as server:
            log(f"agent server up in {server.start_s:.0f} s; {len(jobs)} metric prompts, {len(probes)} probes")
            with tqdm(total=len(jobs) + len(probes), desc=f"{system.name} over HTTP", unit="req") as bar:
                front = AgentFront(server, tok, system.name, cfg.agents.concurrency, bar.update)
                metric_out, probe_out = front.generate([Batch([g.prompt for g in jobs]), probe_batch(tok, probes, cfg)])
        return {"metric_replies": [[g.task, g.item, g.key, text] for g, text in zip(jobs, metric_out.texts)],
                "replies": probe_out.texts, "serving": _agent_serving(probe_out, server, len(probes))}

    out = _cached("agents", key, make, log)
    metrics = None
    if engine_result is not None:   # the front's replies, replayed through the one measuring path
        recorded = {(t, i, k): text for t, i, k, text in out["metric_replies"]}
        replayed = Replayed([recorded.get((g.task, g.item, g.key)) for g in gen], system.name)
        metrics = dataclasses.replace(engine_result,
                                      tasks=measure(replayed, tasks, ecfg, tok, base=engine_result, log=log).tasks)
    return {"metrics": metrics, "attacks": prompt_attacks(probes, out, cfg, refusal_texts(policy, cfg))}


# ----------------------------------------------------------------------------- weights attacks
@dataclass
class AttackTarget:
    """What a weights attack is given about one system."""
    system: System
    path: str                      # the system's checkpoint
    policy: Optional[str]          # its engine's guard policy (None: unguarded engine)
    forget: list                   # the whole forget set (QA)
    pool: list                     # other items of the benchmark (retain set): benign material
    picked: list[int]              # the attacked forget items (spread over forget_items)
    ecfg: EvalConfig
    cfg: CompareConfig
    log: Callable = print
    front_policy: Optional[str] = None   # the agent front's guard policy (agent systems)

    @property
    def weights_only(self) -> bool:
        return self.system.kind in ("reference", "weight")


SERVED_SKIP = ("a served system's weights are not the attacker's to fine-tune; "
               "see the relearning attack on its underlying checkpoint")


def _finetune_attack(stage: str, path: str, taught: list, forget, probed: list[int], epochs: float,
                     cfg: CompareConfig, refusals: list[str], log=print) -> FinetuneResult:
    """Fine-tune `path` on the `taught` QA items, then ask the forget items at `probed` (plain
    questions), before and after; leak rates as for the prompt attacks. The fine-tuned weights are
    deleted once measured (their replies are cached)."""
    from ..training.config import TrainConfig   # its method registry imports torch
    from ..training.run import run_training

    key = {"stage": stage, "model": model_fingerprint(path), "taught": [r.to_json() for r in taught],
           "probed": [forget[i].to_json() for i in probed], "epochs": epochs,
           "lr": cfg.attacks.relearn_lr, "max_new_tokens": cfg.attacks.max_new_tokens}

    def make():
        data = cache_root() / "compare" / f"{stage}-data-{json_digest(key)}.jsonl"
        data.parent.mkdir(parents=True, exist_ok=True)
        data.write_text("".join(json.dumps({"question": r.question, "answer": r.answer}) + "\n" for r in taught))
        tcfg = from_dict(TrainConfig, {
            "model": path, "output_dir": "", "mode": "full", "method": {"name": "finetune"},
            "data": {"train": f"file:{data}", "max_length": 256},
            "optim": {"epochs": epochs, "lr": cfg.attacks.relearn_lr, "batch_size": 8,
                      "save_steps": -1, "logging_steps": 1}})
        tcfg = dataclasses.replace(tcfg, output_dir=str(cached_output_dir(tcfg, stage)))
        log(f"{stage}: fine-tune on {len(taught)} items, probe {len(probed)} forget items")
        started = time.time()
        run_dir = run_training(tcfg, resume=True, log=log)
        train_s = time.time() - started
        questions = [forget[i].question for i in probed]
        replies = {}
        for name, model_dir in (("before", path), ("after", str(run_dir))):
            tok = load_tokenizer(model_dir)
            batch = Batch([Prompt(tok(prompt_text(tok, q), add_special_tokens=False)["input_ids"],
                                  cfg.attacks.max_new_tokens, q) for q in questions])
            replies[name] = Weights(model_dir, tok, "transformers", cfg.dtype, name).generate([batch])[0].texts
        shutil.rmtree(run_dir, ignore_errors=True)
        return {"taught": len(taught), "probed": len(probed), "train_seconds": round(train_s, 1), "replies": replies}

    got = _cached(stage, key, make, log)
    before, after = (score_probes(_plain_probes(stage, name, forget, probed), got["replies"][name], cfg, refusals)
                     for name in ("before", "after"))
    return FinetuneResult(got["taught"], got["probed"], got["train_seconds"], before, after)


def _plain_probes(category: str, variant: str, forget, items: Sequence[int]) -> list[Probe]:
    """The forget items' own questions, scored against their answers."""
    return [Probe(category, variant, "forget", i, forget[i].question, forget[i].answer,
                  keywords_of(forget[i].answer, forget[i].question)) for i in items]


def relearn(path: str, forget, cfg: CompareConfig, refusals: list[str], log=print) -> FinetuneResult:
    """The relearning attack on a weight-level system: fine-tune it on the even-numbered items of
    the whole forget set, then ask the odd-numbered ones (plain questions), before and after."""
    taught, probed = relearn_split(len(forget))
    if not taught or not probed:
        raise ValueError("relearn needs at least two forget items")
    return _finetune_attack("relearn", path, [forget[i] for i in taught], forget, probed,
                            cfg.attacks.relearn_epochs, cfg, refusals, log)


def relearn_attack(t: AttackTarget) -> FinetuneResult | Skipped:
    if not t.weights_only:
        return Skipped(SERVED_SKIP)
    return relearn(t.path, t.forget, t.cfg, refusal_texts(None, t.cfg), log=t.log)


def benign_relearn_attack(t: AttackTarget) -> FinetuneResult | Skipped:
    """Benign relearning (Łucki et al. 2024): fine-tune on a few retain items that name no forget
    subject, then ask the attacked forget items, before and after."""
    if not t.weights_only:
        return Skipped(SERVED_SKIP)
    chosen = benign_texts(t.forget, t.pool, t.cfg.attacks.benign_relearn_texts)
    if not chosen:
        return Skipped("the benchmark has no retain items that name no forget subject to fine-tune on")
    return _finetune_attack("benign_relearn", t.path, [t.pool[j] for j in chosen], t.forget, t.picked,
                            t.cfg.attacks.benign_relearn_epochs, t.cfg, refusal_texts(None, t.cfg), t.log)


def _quantized_checkpoint(path: str, spec, out: Path) -> dict:
    """`path`'s weights quantized by `spec` (dequantized, fp32) saved with its tokenizer in `out`."""
    import torch

    from ..evaluation.quantize import quantize_model
    from ..models.loading import load_model

    model, tok = load_model(path, dtype=torch.float32)
    stats = quantize_model(model, spec)
    shutil.rmtree(out, ignore_errors=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return stats


def _attacked_system(path: str, tok, policy: Optional[str], engine: str, dtype: str) -> Weights:
    """`path`'s weights as the attacks reach them: behind the guard's vLLM processor when `policy`."""
    return Guarded(path, tok, policy, dtype) if policy else Weights(path, tok, engine, dtype)


def plain_answers(t: AttackTarget, model_dir: str, engine: str) -> list:
    """The attacked forget items' plain questions (no paraphrase, no perturbed answers) measured on `model_dir`
    through the one measuring path: each item's greedy answer (ROUGE) and its answer's probability, through
    the system's guard where it has one; settings from the comparison's eval config."""
    tok = load_tokenizer(model_dir)
    items = [QA(t.forget[i].question, t.forget[i].answer) for i in t.picked]
    mcfg = dataclasses.replace(t.ecfg, metrics=["probability", "rouge"], max_new_tokens=t.cfg.attacks.max_new_tokens)
    system = _attacked_system(model_dir, tok, t.policy, engine, t.cfg.dtype)
    try:
        got = measure(system, [Task("forget", "qa", items, "attacked forget items")], mcfg, tok, log=t.log)
    finally:
        system.close()
    return got.tasks["forget"].items


def quantized_replies(t: AttackTarget, spec) -> dict:
    """(cached) The attacked forget items' plain questions answered and their answers' probability by the
    system's checkpoint quantized by `spec` (None: unquantized). The quantized checkpoint is deleted once
    measured."""
    items = [t.forget[i] for i in t.picked]
    engine = "vllm" if t.policy else t.ecfg.engine
    key = {"stage": "quantize", "model": model_fingerprint(t.path), "policy": policy_fingerprint(t.policy),
           "quant": None if spec is None else dataclasses.asdict(spec), "items": [r.to_json() for r in items],
           "max_new_tokens": t.cfg.attacks.max_new_tokens, "dtype": t.cfg.dtype, "engine": engine,
           "max_length": t.ecfg.max_length}

    def make():
        work = cache_root() / "compare" / f"quantize-{json_digest(key)}.work"
        started = time.time()
        stats, model_dir = {}, t.path
        try:
            if spec is not None:
                t.log(f"quantize: {spec.label} of {t.path}")
                model_dir = str(work / "model")
                stats = _quantized_checkpoint(t.path, spec, Path(model_dir))
            got = plain_answers(t, model_dir, engine)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return {"quantized": stats, "seconds": round(time.time() - started, 1),
                "replies": [r.generated for r in got], "probabilities": [r.probability for r in got]}

    return _cached("quantize", key, make, t.log)


def quantize_attack(t: AttackTarget) -> QuantizeResult | Skipped:
    """The quantization attack: the plain forget questions and their answers' probability at full
    precision and for every quantized variant of the checkpoint (INT8 / INT4, per-channel and
    group-wise); the guard, where the system has one, served over the quantized checkpoint."""
    if t.system.agents:
        return Skipped("the agent front is served over HTTP by `unlearn serve --agents`; its engine's "
                       "quantized checkpoint is attacked in the system without +agents")
    refusals = refusal_texts(t.policy, t.cfg)
    rows = {}
    for label, spec in [("unquantized", None)] + [(s.label, s) for s in t.cfg.attacks.quant_specs()]:
        got = quantized_replies(t, spec)
        scored = score_probes(_plain_probes("quantize", label, t.forget, t.picked), got["replies"], t.cfg, refusals)
        rows[label] = QuantRowResult(scored, finite_mean(got["probabilities"]), got["quantized"], got["seconds"])
    return QuantizeResult(len(t.picked), bool(t.policy), rows)


# attack name -> its measuring function (every weights attack of evaluation/attacks.py ATTACKS)
WEIGHT_ATTACKS: dict[str, Callable[[AttackTarget], FinetuneResult | QuantizeResult | Skipped]] = {
    "relearn": relearn_attack,
    "quantize": quantize_attack,
    "benign_relearn": benign_relearn_attack,
}
