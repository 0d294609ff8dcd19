"""`unlearn audit`: the black-box check that a deletion request was honoured, on any deployed
OpenAI-compatible endpoint (this project's `unlearn serve`, or anyone's), without its weights.

    check_endpoint   GET <url>/models before any probe: an unreachable endpoint is refused with the
                     URL and the error, a model it does not serve with the ones it does
    read_items       the forget (and retain) QA file, refused naming it when unreadable or empty
    audit_probes     the prompt attacks of evaluation/attacks.py's ATTACKS on the forget items, and
                     the same attacks on retain items (neighbour probes: what must be kept)
    ask_all          one greedy chat request per probe (compare/endpoint.py `chat`), a few at once
    score            each reply judged as compare judges it (evaluation/leakage.py `score_reply`:
                     leak, refusal, ROUGE-L, key words), aggregated per role and category

The result is one "system" (the endpoint's model) in compare's results layout, so `write_report`
writes the same leak / neighbour tables and plots as `unlearn compare` (report.md, report.html,
plots/), beside results.json with every probe, prompt and reply.
"""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

from ..config import to_dict
from ..errors import ConfigError, DataError
from ..evaluation.attacks import Probe, attack_names, build_probes, check_attacks, spread
from ..evaluation.leakage import ProbeScores, ScoredProbe, score_reply
from ..files import json_digest, write_json_atomic
from .endpoint import EndpointError, chat


@dataclass
class AuditSpec:
    """What `unlearn audit` is asked to do."""
    endpoint: str                         # the OpenAI-compatible base URL (…/v1)
    model: str                            # the model name the endpoint serves
    forget: str                           # QA file (JSON lines or a JSON list) or a data spec: what was deleted
    retain: Optional[str] = None          # QA file of what must be kept (neighbour probes)
    out: Optional[str] = None             # default runs/audit/<model>
    attacks: list[str] = field(default_factory=lambda: attack_names("prompt"))
    forget_items: Optional[int] = None    # forget items attacked (spread over the set); None: all
    neighbours: int = 10                  # retain items probed the same way
    all_jailbreaks: bool = False
    max_new_tokens: int = 64
    leak_keywords: float = 0.5            # the leak rule's thresholds, as in compare's `attacks:`
    leak_rouge: float = 0.5
    refusals: list[str] = field(default_factory=list)   # the endpoint's canned refusal texts, if known
    concurrency: int = 4
    timeout: float = 120.0                # seconds per request

    def validate(self) -> None:
        check_attacks(self.attacks)
        weights = [a for a in self.attacks if a not in attack_names("prompt")]
        if weights:
            raise ConfigError(f"attack(s) {weights} change the weights, which an endpoint does not expose; "
                              f"valid attacks for an audit: {attack_names('prompt')}")
        if self.forget_items is not None and self.forget_items < 1:
            raise ConfigError("--forget-items must be >= 1 (or omitted for all)")
        if self.neighbours < 0 or self.concurrency < 1 or self.max_new_tokens < 1:
            raise ConfigError("--neighbours must be >= 0, --concurrency and --max-new-tokens >= 1")

    def out_dir(self) -> Path:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.model)
        return Path(self.out or f"runs/audit/{safe}")


# ----------------------------------------------------------------------------- refusals before any probe
def served_models(url: str, timeout: float = 10.0) -> list[str]:
    """The model ids `GET <url>/models` lists; an endpoint that does not answer it is refused."""
    import httpx

    try:
        r = httpx.get(f"{url.rstrip('/')}/models", timeout=timeout)
    except httpx.HTTPError as exc:
        raise EndpointError(f"endpoint {url} is unreachable: {type(exc).__name__}: {exc or 'no answer'} "
                            "(give the OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1)") from None
    try:
        body = r.json() if r.status_code == 200 else None
        return [str(m["id"]) for m in body["data"]]
    except Exception:   # noqa: BLE001 - any malformed answer becomes one message
        raise EndpointError(f"endpoint {url} did not answer GET {url.rstrip('/')}/models with an OpenAI model "
                            f"list (HTTP {r.status_code}: {r.text[:200]!r}); is it an OpenAI-compatible base "
                            "URL (…/v1)?") from None


def check_endpoint(url: str, model: str, timeout: float = 10.0) -> list[str]:
    served = served_models(url, timeout)
    if model not in served:
        raise ConfigError(f"endpoint {url} does not serve model {model!r}; it serves: {served}")
    return served


def read_items(source: str, what: str) -> list:
    """QA records of a file (or a data spec such as tofu/forget01); refused naming it when it
    cannot be read, holds nothing, or holds raw text without questions."""
    from ..data.sources import load_spec, read_qa_file

    try:
        items = read_qa_file(source) if Path(source).exists() else load_spec(source)
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{what} file {source!r} cannot be read: {type(exc).__name__}: {exc}") from None
    except DataError as exc:
        raise DataError(f"{what} file {source!r} cannot be read: {exc}") from None
    if not items:
        raise DataError(f"{what} file {source!r} is empty: it needs question/answer pairs (JSON lines or a JSON list)")
    if any(r.question is None for r in items):
        raise DataError(f"{what} file {source!r} holds raw text; an audit asks questions: give question/answer pairs")
    return items


# ----------------------------------------------------------------------------- probing
def audit_probes(spec: AuditSpec, forget: Sequence, retain: Sequence) -> list[Probe]:
    """The prompt attacks on the forget items (role forget) and on retain items (role neighbour)."""
    probes = build_probes(forget, "forget", spec.attacks, spread(len(forget), spec.forget_items), spec.all_jailbreaks)
    if retain and spec.neighbours:
        probes += build_probes(retain, "neighbour", spec.attacks, spread(len(retain), spec.neighbours),
                               spec.all_jailbreaks)
    return probes


def ask_all(spec: AuditSpec, prompts: Sequence[str], progress: Optional[Callable[[int], None]] = None) -> list[dict]:
    """One reply per prompt ({'status', 'text', 'seconds'}; status 0 and 'error' when it failed)."""
    def one(prompt: str) -> dict:
        started = time.perf_counter()
        try:
            out = chat(spec.endpoint, prompt, spec.max_new_tokens, timeout=spec.timeout, model=spec.model)
        except Exception as exc:  # noqa: BLE001 - a failed request is reported, never scored
            out = {"status": 0, "text": "", "error": f"{type(exc).__name__}: {exc}",
                   "seconds": time.perf_counter() - started}
        if progress:
            progress(1)
        return out

    with ThreadPoolExecutor(spec.concurrency) as pool:
        return list(pool.map(one, prompts))


def score(probes: Sequence[Probe], replies: Sequence[dict], spec: AuditSpec) -> dict:
    """Compare's scoring (leakage.score_reply) of the answered probes; failed requests kept apart."""
    scored, failed = [], []
    for p, r in zip(probes, replies):
        if r["status"] != 200:
            failed.append({"role": p.role, "category": p.category, "variant": p.variant, "item": p.item,
                           "prompt": p.prompt, "status": r["status"], "error": r.get("error") or r.get("text", "")[:200]})
            continue
        judged = score_reply(r["text"], p.gold, p.keywords, spec.refusals, spec.leak_rouge, spec.leak_keywords)
        scored.append(ScoredProbe(p.role, p.category, p.variant, p.item, p.prompt, r["text"], judged))
    return {**ProbeScores.of(scored).to_json(), "failed": failed}


def leak_counts(attacks: dict, role: str = "forget") -> dict[str, tuple[int, int]]:
    """{category: (leaking replies, replies)} of one role."""
    out: dict[str, list[int]] = {}
    for r in attacks["records"]:
        if r["role"] == role:
            got = out.setdefault(r["category"], [0, 0])
            got[0] += bool(r["leaked"])
            got[1] += 1
    return {c: (a, b) for c, (a, b) in out.items()}


# ----------------------------------------------------------------------------- the audit
def _data_record(source: str, items: Sequence) -> dict:
    return {"source": source, "items": len(items), "fingerprint": json_digest([r.to_json() for r in items])}


def run_audit(spec: AuditSpec, report: bool = True, log=print) -> dict:
    """Check the endpoint, probe it, score, write results.json and the report; the results doc."""
    from tqdm.auto import tqdm

    spec.validate()
    forget = read_items(spec.forget, "forget")
    retain = read_items(spec.retain, "retain") if spec.retain else []
    served = check_endpoint(spec.endpoint, spec.model)
    probes = audit_probes(spec, forget, retain)
    log(f"audit of {spec.model} at {spec.endpoint}: {sum(p.role == 'forget' for p in probes)} forget probes, "
        f"{sum(p.role == 'neighbour' for p in probes)} neighbour probes")
    started = time.perf_counter()
    with tqdm(total=len(probes), desc=f"audit {spec.model}", unit="req") as bar:
        replies = ask_all(spec, [p.prompt for p in probes], bar.update)
    batch_s = time.perf_counter() - started
    attacks = score(probes, replies, spec)
    ok = [r["seconds"] for r in replies if r["status"] == 200]
    attacks["serving"] = {"requests": len(probes), "failed": len(attacks["failed"]), "batch_seconds": round(batch_s, 2),
                          "latency_median_s": round(statistics.median(ok), 3) if ok else None,
                          "concurrency": spec.concurrency}
    reason = "a black-box audit sees replies only: forget quality needs the model's probabilities"
    system = {"status": "ok", "system": spec.model, "kind": "endpoint", "base": spec.model, "endpoint": spec.endpoint,
              "attacks": attacks, "summary": {"forget_quality": None, "forget_quality_reason": reason}}
    doc = {"name": f"audit of {spec.model} at {spec.endpoint}",
           "provenance": {"config": to_dict(spec), "served_models": served,
                          "data": {"forget": _data_record(spec.forget, forget),
                                   **({"retain": _data_record(spec.retain, retain)} if retain else {})},
                          "probes": {"n": len(probes), "forget": sum(p.role == "forget" for p in probes),
                                     "neighbour": sum(p.role == "neighbour" for p in probes)},
                          "started": time.strftime("%Y-%m-%d %H:%M:%S")},
           "systems": {spec.model: system}, "wall_s": round(batch_s, 1)}
    out = spec.out_dir()
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "results.json", doc)
    if report:
        from .report import write_report

        write_report(doc, out)
    return doc
