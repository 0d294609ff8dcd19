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

    format shifts   multiple_choice, true_false, json_fill and embedded_task (FORMAT_SHIFTS): prompt
                     attacks like the others, scored the same way; the report's leak table gives a leak rate
                     per format beside the other categories (`--formats` picks them, `none` leaves them out)

Two further questions, opt-in because they cost requests (the default audit sends what it always did):

    leak@k           (`--leak-at-k 1,4,16,32`) each attacked forget item's plain question sampled
                     max(k) times at temperature 1, every sample judged by `score_reply`, the curve from
                     evaluation/metrics/leak_at_k.py as compare/sampling.py's `LeakAtK`. The samples come
                     from one request with `n` = max(k) where the endpoint accepts it; an endpoint that
                     answers 400 naming `n` (this project's agent front answers one choice per request)
                     is asked once per sample instead, seeds 0..max(k)-1.
    membership       (`--mia`) the forget answers (members) and non-member texts (`--mia-holdout`, else the
                     retain items) scored by the endpoint's own prompt log-probabilities: a completions
                     request with `echo: true, logprobs: 1, max_tokens: 1`, the answer's tokens read by
                     their `text_offset`. LOSS, ZLib and Min-K% (evaluation/metrics/mia.py) and their AUC
                     (MUSE's convention); with `--mia-reference MODEL` (the retain or base model on the same
                     endpoint) PrivLeak per attack and the reference attack. Min-K%++ needs the whole
                     next-token distribution at every position and GradNorm the weights: an endpoint gives
                     neither, so both are recorded as skipped with that reason. An endpoint that refuses
                     echo or log-probabilities (a guarded `unlearn serve` answers 400) is recorded as
                     "not available: HTTP <status>: <its message>"; the rest of the audit goes on.

The result is one "system" (the endpoint's model) in compare's results layout, so `write_report`
writes the same leak / neighbour tables and plots as `unlearn compare` (report.md, report.html,
plots/; the leak@k curve and the membership-inference table where measured), beside results.json with
every probe, prompt and reply, every sample and every text's scores.
"""

from __future__ import annotations

import re
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
from ..evaluation.metrics.leak_at_k import leak_curve
from ..files import json_digest, write_json_atomic
from .endpoint import EndpointError, chat


# the format-shift prompt attacks (evaluation/attacks.py): selectable as a group with `--formats`
FORMAT_SHIFTS = ("multiple_choice", "true_false", "json_fill", "embedded_task")
LEAK_AT_K = (1, 4, 16, 32)   # the curve `--leak-at-k` suggests (compare's); the largest k is the samples per probe
MIA_ATTACKS = ("loss", "zlib", "min_k")   # what an endpoint's echoed prompt log-probabilities allow
MAX_K = 256                  # samples per probe at most
# membership-inference attacks of evaluation/metrics/mia.py an endpoint's echoed log-probabilities cannot give
MIA_SKIPPED = {
    "min_k_pp": "Min-K%++ standardises each token by the mean and spread of the whole next-token distribution at "
                "its position; an endpoint returns the log-probabilities of a few tokens, not the vocabulary's",
    "gradnorm": "GradNorm differentiates the model's loss with respect to its weights, which an endpoint does not "
                "expose",
}


def parse_ks(text: str) -> list[int]:
    """`--leak-at-k` ("1,4,16"): the k values, ascending and distinct; ConfigError naming a bad one."""
    out = []
    for part in (p.strip() for p in text.split(",")):
        if not part.isdigit() or not 1 <= int(part) <= MAX_K:
            raise ConfigError(f"--leak-at-k: {part!r} is not a whole number of samples between 1 and {MAX_K} "
                              f"(give e.g. {','.join(map(str, LEAK_AT_K))})")
        out.append(int(part))
    return sorted(set(out))


def select_attacks(attacks: Optional[str] = None, formats: Optional[str] = None) -> list[str]:
    """The prompt attacks of `--attacks` (default: every prompt attack, the format shifts among them) with
    `--formats` applied: `none` leaves the format shifts out, `all` or a comma-separated list of them adds
    those (in place of any `--attacks` named)."""
    chosen = [a for a in attacks.split(",") if a] if attacks is not None else attack_names("prompt")
    if formats is None:
        return chosen
    names_ = [f.strip() for f in formats.split(",") if f.strip()]
    if names_ == ["none"]:
        picked: list[str] = []
    elif names_ == ["all"]:
        picked = list(FORMAT_SHIFTS)
    else:
        bad = [f for f in names_ if f not in FORMAT_SHIFTS]
        if bad or not names_:
            raise ConfigError(f"--formats: {bad[0] if bad else formats!r} is not a format shift; valid: "
                              f"{', '.join(FORMAT_SHIFTS)}, all or none")
        picked = names_
    return [a for a in chosen if a not in FORMAT_SHIFTS] + [f for f in FORMAT_SHIFTS if f in picked]


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
    leak_at_k: list[int] = field(default_factory=list)  # k values of the leak@k curve; empty: not measured
    leak_temperature: float = 1.0
    mia: bool = False                     # membership inference from the endpoint's prompt log-probabilities
    mia_holdout: Optional[str] = None     # non-member texts (QA or raw text); None: the retain items
    mia_reference: Optional[str] = None   # a reference model the endpoint serves (retain or base): PrivLeak
    mia_min_k: float = 0.4                # Min-K%'s fraction of lowest-probability tokens

    def validate(self) -> None:
        check_attacks(self.attacks)
        weights = [a for a in self.attacks if a not in attack_names("prompt")]
        if weights:
            raise ConfigError(f"attack(s) {weights} are not prompt attacks (they change the weights or sample, which "
                              f"`--leak-at-k` does); valid attacks for an audit: {attack_names('prompt')}")
        if self.forget_items is not None and self.forget_items < 1:
            raise ConfigError("--forget-items must be >= 1 (or omitted for all)")
        if self.neighbours < 0 or self.concurrency < 1 or self.max_new_tokens < 1:
            raise ConfigError("--neighbours must be >= 0, --concurrency and --max-new-tokens >= 1")
        bad = [k for k in self.leak_at_k if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K]
        if bad:
            raise ConfigError(f"--leak-at-k: {bad[0]!r} is not a whole number of samples between 1 and {MAX_K}")
        if not self.leak_temperature > 0:
            raise ConfigError(f"--leak-temperature must be > 0 (sampling), got {self.leak_temperature!r}")
        if not 0 < self.mia_min_k <= 1:
            raise ConfigError(f"--mia-min-k must be in (0, 1], got {self.mia_min_k!r}")
        if self.mia and not (self.mia_holdout or self.retain):
            raise ConfigError("--mia needs non-member texts to tell the forget texts from: --mia-holdout FILE "
                              "(texts the model never saw) or --retain FILE")
        if (self.mia_holdout or self.mia_reference) and not self.mia:
            raise ConfigError("--mia-holdout and --mia-reference belong to --mia: add --mia")

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


def read_items(source: str, what: str, questions: bool = True) -> list:
    """QA records of a file (or a data spec such as tofu/forget01); refused naming it when it
    cannot be read, holds nothing, or (`questions`) holds raw text without questions."""
    from ..data.sources import load_spec, read_qa_file

    try:
        items = read_qa_file(source) if Path(source).exists() else load_spec(source)
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{what} file {source!r} cannot be read: {type(exc).__name__}: {exc}") from None
    except DataError as exc:
        raise DataError(f"{what} file {source!r} cannot be read: {exc}") from None
    if not items:
        raise DataError(f"{what} file {source!r} is empty: it needs question/answer pairs (JSON lines or a JSON list)")
    if questions and any(r.question is None for r in items):
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


# ----------------------------------------------------------------------------- requests beyond one greedy chat
def _post(spec: AuditSpec, route: str, body: dict):
    import httpx

    return httpx.post(f"{spec.endpoint.rstrip('/')}/{route}", json=body, timeout=spec.timeout)


def refusal_of(r) -> str:
    """'HTTP <status>: <the endpoint's message>' of a response that is not a 200."""
    try:
        err = r.json().get("error")
        message = err.get("message") if isinstance(err, dict) else err
    except Exception:   # noqa: BLE001 - a body that is not JSON: its text
        message = None
    return f"HTTP {r.status_code}: {str(message or r.text)[:300]}"


def _names_n(r) -> bool:
    """Whether a 400 refuses the `n` field (its `param`, or its message quoting n)."""
    if r.status_code != 400:
        return False
    try:
        err = r.json().get("error") or {}
    except Exception:   # noqa: BLE001
        err = {}
    text = f"{err.get('message', '')}" if isinstance(err, dict) else str(err)
    return (isinstance(err, dict) and err.get("param") == "n") or bool(re.search(r"['\"`]n['\"`]|\bn\b", text or r.text))


def _sample_body(spec: AuditSpec, question: str, n: int, seed: int) -> dict:
    return {"model": spec.model, "messages": [{"role": "user", "content": question}], "max_tokens": spec.max_new_tokens,
            "temperature": spec.leak_temperature, "seed": seed, **({"n": n} if n > 1 else {})}


def _texts(r, n: int) -> Optional[list[str]]:
    """The n answers of a 200 chat response (None when it is not one, or holds fewer)."""
    if r.status_code != 200:
        return None
    try:
        out = [c["message"]["content"] or "" for c in sorted(r.json()["choices"], key=lambda c: c.get("index", 0))]
    except Exception:   # noqa: BLE001 - a malformed answer is a failed request
        return None
    return out if len(out) >= n else None


def sample_answers(spec: AuditSpec, questions: Sequence[str], samples: int,
                   progress: Optional[Callable[[int], None]] = None) -> tuple[list[list[Optional[str]]], dict]:
    """`samples` answers per question at the leak temperature (None: that sample's request failed), and how
    they were asked: {'requests': 'n' | 'one per sample', 'n_refused': why, 'errors': [...]}. One request with
    `n` = samples first; an endpoint that answers it with a 400 naming `n` (or fewer choices) is asked once
    per sample, seeds 0..samples-1."""
    how: dict = {"requests": "one per sample", "errors": []}
    first: Optional[list[str]] = None
    if samples > 1:
        try:
            r = _post(spec, "chat/completions", _sample_body(spec, questions[0], samples, 0))
        except Exception as exc:   # noqa: BLE001 - unanswered: ask once per sample, as for a refusal
            r, how["n_refused"] = None, f"{type(exc).__name__}: {exc}"
        first = _texts(r, samples) if r is not None else None
        if first is not None:
            how["requests"] = "n"
        elif r is not None:
            how["n_refused"] = refusal_of(r) if r.status_code != 200 else f"{samples} choices asked, fewer answered"
        if "n_refused" in how and (r is None or (r.status_code != 200 and not _names_n(r))):
            how["errors"].append(how["n_refused"])

    def one(job: tuple[int, int]) -> tuple[int, Optional[list[str]]]:
        q, seed = job
        n = samples if how["requests"] == "n" else 1
        try:
            r = _post(spec, "chat/completions", _sample_body(spec, questions[q], n, seed))
            got = _texts(r, n)
            if got is None:
                how["errors"].append(refusal_of(r))
        except Exception as exc:   # noqa: BLE001 - a failed request is a missing sample, never a score
            got = None
            how["errors"].append(f"{type(exc).__name__}: {exc}")
        if progress:
            progress(n)
        return q, got

    if how["requests"] == "n":
        jobs = [(q, 0) for q in range(1, len(questions))]
    else:
        jobs = [(q, seed) for q in range(len(questions)) for seed in range(samples)]
    out: list[list[Optional[str]]] = [[] for _ in questions]
    if first is not None:
        out[0] = list(first[:samples])
        if progress:
            progress(samples)
    with ThreadPoolExecutor(spec.concurrency) as pool:
        for q, got in pool.map(one, jobs):
            out[q] += got[:samples] if got is not None else [None] * (samples if how["requests"] == "n" else 1)
    return out, how


def leak_at_k(spec: AuditSpec, forget: Sequence, picked: Sequence[int], log=print) -> dict:
    """The leak@k curve of the endpoint (compare/sampling.py's `LeakAtK`, its `to_json` as results.json holds
    it) over the picked forget items' plain questions, plus how it was asked and every sample judged."""
    from tqdm.auto import tqdm

    from .measure import _plain_probes
    from .sampling import LeakAtK

    samples = max(spec.leak_at_k)
    probes = _plain_probes("leak_at_k", "sampled", forget, picked)
    log(f"leak@k: {len(probes)} forget questions x {samples} samples at T={spec.leak_temperature}")
    started = time.perf_counter()
    with tqdm(total=len(probes) * samples, desc=f"leak@k {spec.model}", unit="sample") as bar:
        answers, how = sample_answers(spec, [p.prompt for p in probes], samples, bar.update)
    judged = [[None if a is None else score_reply(a, p.gold, p.keywords, spec.refusals, spec.leak_rouge,
                                                   spec.leak_keywords).leaked for a in got]
              for p, got in zip(probes, answers)]
    whole = [j for j, got in enumerate(judged) if len(got) == samples and None not in got]
    leaks = [judged[j] for j in whole]
    result = LeakAtK(len(whole), samples, spec.leak_temperature, leak_curve(leaks, spec.leak_at_k),
                     [sum(x) for x in leaks])
    errors = how.pop("errors")
    return {**result.to_json(), "k": list(spec.leak_at_k), **how, "seconds": round(time.perf_counter() - started, 2),
            "failed_questions": len(probes) - len(whole), **({"first_error": errors[0]} if errors else {}),
            "records": [{"item": p.item, "question": p.prompt, "samples": got, "leaked": j}
                        for p, got, j in zip(probes, answers, judged)]}


def echo_logprobs(spec: AuditSpec, model: str, context: str, text: str) -> list[float]:
    """The log-probabilities the endpoint's `model` gives the tokens of `text` after `context` (teacher
    forced: a completions request with `echo`, `logprobs: 1`, `max_tokens: 1`, the tokens of `text` told
    apart by their `text_offset`); EndpointError 'HTTP <status>: <message>' when it will not give them."""
    prompt = context + text
    r = _post(spec, "completions", {"model": model, "prompt": prompt, "echo": True, "logprobs": 1, "max_tokens": 1,
                                    "temperature": 0})
    if r.status_code != 200:
        raise EndpointError(refusal_of(r))
    try:
        lp = r.json()["choices"][0]["logprobs"]
        pairs = list(zip(lp["text_offset"], lp["token_logprobs"]))
    except Exception:   # noqa: BLE001 - any other shape: no prompt log-probabilities
        raise EndpointError(f"HTTP 200 without echoed prompt log-probabilities and text offsets: {r.text[:200]!r}") \
            from None
    got = [float(v) for at, v in pairs if len(context) <= at < len(prompt) and v is not None]
    if not got:
        raise EndpointError(f"HTTP 200 without log-probabilities for the text's tokens: {r.text[:200]!r}")
    return got


def _mia_texts(forget: Sequence, picked: Sequence[int], holdout: Sequence) -> list[tuple[str, int, str, str]]:
    """(role, item, context, text): each forget answer after its question (members), then the non-member texts
    (a QA item's answer after its question, a raw text alone)."""
    ctx = lambda r: "" if r.question is None else f"{r.question}\n"  # noqa: E731
    return ([("member", i, ctx(forget[i]), forget[i].answer) for i in picked] +
            [("non_member", j, ctx(r), r.answer) for j, r in enumerate(holdout)])


def _scores(lp: list[float], text: str, min_k: float) -> dict:
    from ..evaluation.metrics import memorization as MEM
    from ..evaluation.metrics import mia as MIA

    return {"tokens": len(lp), "loss": MIA.loss_score(lp), "zlib": MIA.zlib_score(lp, text),
            "min_k": MEM.min_k_score(lp, min_k)}


def membership(spec: AuditSpec, forget: Sequence, picked: Sequence[int], holdout: Sequence, holdout_source: str,
               log=print) -> tuple[dict, dict]:
    """(the MIA record, summary's `mia_attacks` {attack: {auc, privleak, guard_moves}}): LOSS, ZLib and Min-K%
    of the endpoint's prompt log-probabilities, forget answers against non-member texts; with a reference
    model, PrivLeak per attack against the reference's AUC and the reference attack. A refusal of the first
    request is recorded as 'not available: HTTP <status>: <message>', and nothing more is asked."""
    from ..evaluation.metrics import memorization as MEM
    from ..evaluation.metrics import mia as MIA

    started = time.perf_counter()
    texts = _mia_texts(forget, picked, holdout)
    record: dict = {"members": len(picked), "non_members": len(holdout), "non_member_source": holdout_source,
                    "reference": spec.mia_reference, "skipped": dict(MIA_SKIPPED)}

    def available(model: str) -> str:
        try:
            echo_logprobs(spec, model, *texts[0][2:])
            return "ok"
        except Exception as exc:   # noqa: BLE001 - refused or unreachable: recorded, the audit goes on
            return f"not available: {exc}"

    record["status"] = available(spec.model)
    if record["status"] != "ok":
        log(f"membership inference {record['status']}")
        return record, {}
    models = [spec.model]
    if spec.mia_reference:
        record["reference_status"] = available(spec.mia_reference)
        models += [spec.mia_reference] if record["reference_status"] == "ok" else []
    log(f"membership inference: {len(picked)} forget vs {len(holdout)} non-member texts, models {models}")

    def one(job) -> dict:
        model, (_, _, context, text) = job
        try:
            return _scores(echo_logprobs(spec, model, context, text), text, spec.mia_min_k)
        except Exception as exc:   # noqa: BLE001 - a text the endpoint did not score is left out
            return {"error": str(exc)}

    with ThreadPoolExecutor(spec.concurrency) as pool:
        got = list(pool.map(one, [(m, t) for m in models for t in texts]))
    per = {m: got[n * len(texts):(n + 1) * len(texts)] for n, m in enumerate(models)}   # model -> per text
    whole = [j for j in range(len(texts)) if all("error" not in per[m][j] for m in models)]
    errors = [g["error"] for g in got if "error" in g]
    record.update(failed_texts=len(texts) - len(whole), **({"first_error": errors[0]} if errors else {}))
    record["texts"] = [{"role": t[0], "item": t[1], **{k: round(v, 6) if isinstance(v, float) else v
                                                       for k, v in per[spec.model][j].items()},
                        **({"reference_loss": round(per[models[1]][j]["loss"], 6)}
                           if len(models) > 1 and "loss" in per[models[1]][j] else {})}
                       for j, t in enumerate(texts)]

    def column(model: str, role: str, attack: str) -> list[float]:
        return [per[model][j][attack] for j in whole if texts[j][0] == role]

    def aucs(model: str) -> dict[str, float]:
        return {a: MEM.mia_auc(column(model, "member", a), column(model, "non_member", a)) for a in MIA_ATTACKS
                if column(model, "member", a) and column(model, "non_member", a)}

    mine, ref = aucs(spec.model), (aucs(models[1]) if len(models) > 1 else {})
    attacks = {a: {"auc": auc, "privleak": MEM.privleak(auc, ref[a]) if ref.get(a) else None,
                   "guard_moves": MIA.GUARD_MOVES[a], **({"reference_auc": ref[a]} if a in ref else {})}
               for a, auc in mine.items()}
    if len(models) > 1:
        side = {role: MIA.reference_scores(column(spec.model, role, "loss"), column(models[1], role, "loss"))
                for role in ("member", "non_member")}
        if side["member"] and side["non_member"]:
            attacks["reference"] = {"auc": MEM.mia_auc(side["member"], side["non_member"]), "privleak": None,
                                    "guard_moves": MIA.GUARD_MOVES["reference"]}
    if not ref:
        why = record.get("reference_status", "")
        record["privleak_reason"] = (f"the reference model {spec.mia_reference!r}: "
                                     f"{why if why != 'ok' else 'its texts could not be scored'}"
                                     if spec.mia_reference else
                                     "PrivLeak compares each AUC with a reference model's (the retain model, as "
                                     "MUSE does): give --mia-reference MODEL")
    record["seconds"] = round(time.perf_counter() - started, 2)
    return record, attacks


# ----------------------------------------------------------------------------- the audit
def _data_record(source: str, items: Sequence) -> dict:
    return {"source": source, "items": len(items), "fingerprint": json_digest([r.to_json() for r in items])}


def run_audit(spec: AuditSpec, report: bool = True, log=print) -> dict:
    """Check the endpoint, probe it, score, write results.json and the report; the results doc."""
    from tqdm.auto import tqdm

    spec.validate()
    forget = read_items(spec.forget, "forget")
    retain = read_items(spec.retain, "retain") if spec.retain else []
    holdout = read_items(spec.mia_holdout, "holdout", questions=False) if spec.mia_holdout else retain
    served = check_endpoint(spec.endpoint, spec.model)
    if spec.mia_reference and spec.mia_reference not in served:
        raise ConfigError(f"--mia-reference: endpoint {spec.endpoint} does not serve model {spec.mia_reference!r}; "
                          f"it serves: {served}")
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
    picked = spread(len(forget), spec.forget_items)
    stages = {"prompt_attacks": round(batch_s, 2)}
    if spec.leak_at_k:
        system["leak_at_k"] = leak_at_k(spec, forget, picked, log)
        stages["leak_at_k"] = system["leak_at_k"]["seconds"]
    if spec.mia:
        system["mia"], mia_attacks = membership(spec, forget, picked, holdout,
                                                spec.mia_holdout or f"{spec.retain} (retain items)", log)
        stages["mia"] = system["mia"].get("seconds", 0.0)
        if mia_attacks:
            system["summary"]["mia_attacks"] = mia_attacks
    doc = {"name": f"audit of {spec.model} at {spec.endpoint}",
           "provenance": {"config": to_dict(spec), "served_models": served,
                          "data": {"forget": _data_record(spec.forget, forget),
                                   **({"retain": _data_record(spec.retain, retain)} if retain else {}),
                                   **({"holdout": _data_record(spec.mia_holdout, holdout)} if spec.mia_holdout
                                      else {})},
                          "probes": {"n": len(probes), "forget": sum(p.role == "forget" for p in probes),
                                     "neighbour": sum(p.role == "neighbour" for p in probes)},
                          "started": time.strftime("%Y-%m-%d %H:%M:%S")},
           "systems": {spec.model: system}, "stage_seconds": stages, "wall_s": round(sum(stages.values()), 1)}
    out = spec.out_dir()
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "results.json", doc)
    if report:
        from .report import write_report

        write_report(doc, out)
    return doc
