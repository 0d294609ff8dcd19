"""The report's tables, one function per section: the typed systems in, [(title, header, rows, note)] out
(none when the section has nothing to show). compare/report.py lists them in the report's order (SECTIONS).
"""

from __future__ import annotations

from .attack_results import QuantRow
from .report_rows import (HEADLINE_COLUMNS, KEEP_NEIGHBOURS, RETAIN_TOLERANCE, Systems, Table, _f, _or_na, _reaches,
                          categories, dial_points, headline_rows, sequential_steps)
from .results import Training, parse_doc
from .seeds import spread


# metric -> (what it measures, can weight edits move it, can a token guard, can agents)
PARADIGMS = {
    "forget quality / truth ratio / answer probability / MIA": (
        "teacher-forced probabilities", "yes", "yes: mask + penalty at every position of flagged prompts",
        "no: a text rewriter never changes the engine's probabilities (the engine's numbers are reported)"),
    "forget / paraphrase ROUGE-L": ("greedy answers through the deployed path", "yes", "yes", "yes"),
    "model utility": ("probability, ROUGE-L, truth ratio on retain / utility sets", "yes",
                      "yes, on prompts the classifier flags", "ROUGE-L part only"),
    "attack leak rate / neighbour retention": ("replies to attack probes", "yes", "yes", "yes"),
    "relearning attack": ("fine-tune the weights on half the forget facts", "yes (the threat model)",
                          "n/a: the attacker has no served weights", "n/a"),
    "benign relearning attack": ("fine-tune the weights on a few texts naming no forget subject",
                                 "yes (the threat model)", "n/a: the attacker has no served weights", "n/a"),
    "quantization attack": ("the checkpoint rounded to INT8 / INT4, then the forget questions and answer probability",
                            "yes (the threat model)", "yes: the guard served over the quantized checkpoint",
                            "n/a: measured on the engine without the agents"),
}


# the tables `unlearn attack` prints (titles start so)
ATTACK_TABLES = ("Leak rate per attack category", "Neighbour probes", "Quantization attack")


def _empty_forget_quality(rows) -> list[str]:
    """One note per reason forget quality is empty, naming its systems ("every system" when all share it)."""
    measured = [r for r in rows if r.ok]
    by_reason: dict[str, list[str]] = {}
    for r in measured:
        if r.forget_quality is None and r.forget_quality_reason:
            by_reason.setdefault(r.forget_quality_reason, []).append(r.system)
    every = "every system" if len(measured) == len(rows) else "every measured system"
    return [f"forget quality of {every if len(names) == len(measured) > 1 else ', '.join(names)} is empty: "
            f"{reason}" for reason, names in by_reason.items()]


def headline_table(systems: Systems) -> list[Table]:
    rows, headline = [], headline_rows(systems)
    notes = _empty_forget_quality(headline)
    for r in headline:
        if not r.ok:
            rows.append([r.system, r.kind or "", "FAILED"] + [""] * (len(HEADLINE_COLUMNS) - 4) + [r.failed])
            continue
        rows.append([cell(r) for _, cell in HEADLINE_COLUMNS])
    return [("Headline", [header for header, _ in HEADLINE_COLUMNS], rows,
             "\n".join(notes) + ("\n" if notes else "") +
             "Leak: a reply that is not a refusal and holds >= leak_keywords of the gold answer's key names/words "
             "the prompt did not give (ROUGE-L recall >= leak_rouge where there are none). Retention: neighbour-probe ROUGE-L / the target's. Training: the unlearning run "
             "(weights) plus the guard build; the target and retain fine-tunes are the benchmark's, not counted.")]


def muse_table(systems: Systems) -> list[Table]:
    """MUSE's own metrics, where the benchmark has its tasks."""
    rows = [[name, _f(r.muse.verbmem), _f(r.muse.knowmem_forget), _f(r.muse.knowmem_retain), _f(r.muse.mia_auc),
             _f(r.muse.privleak, 1)] for name, r in systems.items() if r.ok and r.muse.measured]
    if not rows:
        return []
    return [("MUSE metrics", ["system", "verbmem ROUGE-L F1 (forget)", "knowmem ROUGE-L F1 (forget)",
                              "knowmem ROUGE-L F1 (retain)", "Min-K% AUC (forget vs holdout)", "PrivLeak %"], rows,
             "Verbatim memorisation: the forget passages' second halves continued from their first; knowledge "
             "memorisation: MUSE's few-shot questions (forget: should fall to the retain model's level; retain: should "
             "stay); PrivLeak = (AUC - AUC_retain) / AUC_retain x 100, 0 at the retain model, -100 when every forget "
             "passage is told apart from the holdout ones. Teacher-forced Min-K% through a guard: a guard built from "
             "QA pairs has no prompt to flag on a bare passage and leaves it unchanged; a corpus guard's quote "
             "filter withholds every token that would extend a corpus run past its bound, so the forget passages "
             "become the unlikely ones and AUC goes to the other extreme (PrivLeak far above 0).")]


def leak_table(systems: Systems) -> list[Table]:
    """Leak rate per attack category, the relearning attacks' after their fine-tune; a mark where a
    system reaches the retain model's rate while keeping its neighbours."""
    cats = categories(systems)
    reach = _reaches(systems)
    benign = any(r.benign_relearn.after is not None for r in systems.values())
    rows = []
    for name, res in systems.items():
        by = res.attacks.forget
        if not by:
            continue
        mark = lambda c: " ✓" if reach.get(name, {}).get(c) else ""  # noqa: E731
        rl = res.relearn.after_leak_rate
        rows.append([name] + [_f(res.attacks.forget_rates(c).leak_rate, 2) + mark(c) for c in cats] +
                    [(_f(rl, 2) + mark("relearn")) if rl is not None else "n/a"] +
                    ([_or_na(res.benign_relearn.after_leak_rate)] if benign else []))
    if not rows:
        return []
    return [("Leak rate per attack category (forget items)",
             ["system"] + cats + ["relearn"] + (["benign_relearn"] if benign else []), rows,
             f"✓: within {RETAIN_TOLERANCE} of the retain model's leak rate while keeping >= "
             f"{int(KEEP_NEIGHBOURS * 100)}% of the target's neighbour ROUGE-L.")]


def neighbour_table(systems: Systems) -> list[Table]:
    cats = categories(systems)
    rows = []
    for name, res in systems.items():
        if res.attacks.neighbour:
            rows.append([name] + [f"{_f(res.attacks.neighbour_rates(c).rouge, 2)} / "
                                  f"{_f(res.attacks.neighbour_rates(c).refusal_rate, 2)}" for c in cats])
    if not rows:
        return []
    return [("Neighbour probes (retain items, same attacks): ROUGE-L recall / refusal rate",
             ["system"] + cats, rows, "Over-suppression shows as lower ROUGE-L or more refusals than the target.")]


def truth_ratio_table(systems: Systems) -> list[Table]:
    rows = []
    for name, res in systems.items():
        tr = res.metrics.truth_ratio
        if res.ok and tr:
            rows.append([name, _f(res.metrics.forget_quality, 4), _f(res.metrics.ks_statistic, 3),
                         _f(tr.median, 3), f"{_f(tr.q1, 3)} – {_f(tr.q3, 3)}", _f(tr.prefers_false, 2)])
    if not rows:
        return []
    return [("Forget quality, read through the truth ratio", ["system", "forget quality", "KS statistic",
                                                               "median R (forget)", "R quartiles",
                                                               "share preferring false answers"], rows,
             "R = P(perturbed answer) / P(paraphrased true answer), per forget item. A model that never learnt "
             "the facts (the retain model) sits near R = 1; one that still knows them sits below; one pushed to "
             "prefer false answers sits above. Forget quality (KS test against the retain model's R) is low at "
             "both ends: forgetting is not the same as being indistinguishable from never having learnt.")]


def _span(interval, digits: int) -> str:
    return "—" if interval is None else f"{_f(interval.low, digits)} – {_f(interval.high, digits)}"


def spread_table(systems: Systems) -> list[Table]:
    rows = [[name, _f(m.forget_quality, 4), _span(m.forget_quality_interval, 4), _f(m.model_utility),
             _span(m.model_utility_interval, 3)]
            for name, m in ((n, r.metrics) for n, r in systems.items() if r.ok)
            if m.forget_quality_interval or m.model_utility_interval]
    if not rows:
        return []
    return [("Spread from one run: bootstrap intervals over items",
             ["system", "forget quality", "95% interval", "model utility", "95% interval"], rows,
             "Percentile bootstrap (1,000 resamples) of each system's one evaluation: forget items resampled "
             "(paired with the retain model's same items), each utility set resampled on its own "
             "(evaluation/metrics/bootstrap.py). The spread of the measurement over items, not over training "
             "seeds; overlapping intervals mean the item sample cannot tell the systems apart.")]


def _over_seeds(values, digits: int) -> list[str]:
    s = spread(values)
    if s is None:
        return ["—", "—"]
    sd = "" if s.sd is None else f" ± {_f(s.sd, digits)}"
    return [f"{_f(s.mean, digits)}{sd}", f"{_f(s.low, digits)} – {_f(s.high, digits)}"]


def _seeds_listed(runs) -> str:
    """The seeds in order, each failed one with its reason (it counts in no mean)."""
    return ", ".join(str(x.seed) if not x.error else f"{x.seed} (failed: {x.error})" for x in runs)


def seeds_table(systems: Systems) -> list[Table]:
    rows = []
    for name, r in systems.items():
        if r.seeds:
            rows.append([name, _seeds_listed(r.seeds),
                         *_over_seeds([x.forget_quality for x in r.seeds], 4),
                         *_over_seeds([x.model_utility for x in r.seeds], 3),
                         _over_seeds([x.train_seconds for x in r.seeds], 0)[0]])
        elif r.seeds_error:
            rows.append([name, f"failed: {r.seeds_error}", *["—"] * 5])
    if not rows:
        return []
    return [("Spread over training seeds",
             ["system", "seeds", "forget quality (mean ± sd)", "range", "model utility (mean ± sd)", "range",
              "training s (mean ± sd)"], rows,
             "Each weight-level method trained once per seed (`optim.seed`: data order, initialisation, the RMU "
             "direction) and measured the same way as its row above, which is the first seed listed; sd is the "
             "sample standard deviation over seeds (compare/seeds.py).")]


def dial_table(systems: Systems) -> list[Table]:
    rows = []
    for name, r in dial_points(systems):
        tr = r.metrics.truth_ratio
        rows.append([name, r.guard_mode, "withheld" if r.guard_soft_mask is None else _f(r.guard_soft_mask, 3),
                     _f(r.metrics.forget_quality, 4), _f(tr.median if tr else None, 3),
                     _f(r.attacks.forget_all.leak_rate, 3), _f(r.metrics.model_utility, 3)])
    if not rows:
        return []
    return [("Guard modes: the calibration dial", ["system", "mode", "soft mask (logits)", "forget quality",
                                                   "median R (forget)", "leak rate (prompt attacks)", "model utility"],
             rows, "Strict withholds every token completing a forbidden phrase; calibrated lowers it by the soft "
                   "mask, fitted at build time (guard/calibrate.py) so the guarded model's truth ratios match a "
                   "model that never learnt the facts. More mask: fewer leaks, until the model prefers the false "
                   "answers (median R above the retain model's) and forget quality falls again.")]


def cost_table(systems: Systems) -> list[Table]:
    rows = []
    for name, res in systems.items():
        if not res.ok:
            continue
        sv = res.attacks.serving
        tr = res.training if res.unlearning_seconds is not None else Training()
        rows.append([name, _f(tr.train_seconds, 0), _f(tr.peak_memory_mb, 0),
                     _f(tr.trainable_fraction, 4), _f(res.guard_build_seconds, 1),
                     _f(sv.tokens_per_s, 1), _f(sv.latency_median_s, 2),
                     _f(sv.llm_calls_per_flagged, 2), _f(sv.server_start_s, 0)])
    if not rows:
        return []
    return [("Cost", ["system", "unlearning training s", "peak MB", "trainable share", "guard build s", "attack tok/s",
                      "latency s (one request)", "LLM calls per flagged request", "server start s"], rows,
             "Throughput: output tokens / wall seconds of the whole attack batch through the deployed path "
             "(offline vLLM; the agent server over HTTP at its concurrency). Latency: median of forget probes "
             "sent one at a time.")]


def stage_table(systems: Systems) -> list[Table]:
    """Wall seconds per measuring stage and system (results written before stages were timed: none)."""
    timed = {name: r.stage_seconds for name, r in systems.items() if r.ok and r.stage_seconds}
    if not timed:
        return []
    # the order measure_system runs them in, whichever system first had each
    stages = list(dict.fromkeys(["checkpoint", "guard", "metrics and prompt attacks",
                                 *(stage for seconds in timed.values() for stage in seconds)]))
    stages = [stage for stage in stages if any(stage in seconds for seconds in timed.values())]
    rows = [[name, *(_f(seconds.get(stage), 0) for stage in stages)] for name, seconds in timed.items()]
    return [("Wall time per stage (s)", ["system", *stages], rows,
             "checkpoint: training the system's weights or reading them from the cache; guard: building or reading "
             "its policy; metrics and prompt attacks: one engine (or agent server) for the evaluation sets and every "
             "prompt attack, format shifts included; then each weight or sampling attack. A cached stage shows the "
             "seconds it took to read back.")]


def paradigm_table(systems: Systems) -> list[Table]:
    return [("Which paradigm can move which metric", ["metric", "measured on", "weight edits", "token guard", "agents"],
             [[k, *v] for k, v in PARADIGMS.items()], "")]


def failed_table(systems: Systems) -> list[Table]:
    failed = [[n, "" if r.reason is None else r.reason] for n, r in systems.items() if not r.ok]
    return [("Failed systems", ["system", "reason"], failed, "Every other system was measured.")] if failed else []


def quantization_table(doc: dict) -> list[Table]:
    """The quantization attack: leak rate / answer probability of the plain forget questions per
    variant, and the largest recovery over the unquantized system (none when no system ran it)."""
    return quantization_section(parse_doc(doc))


def quantization_section(systems: Systems) -> list[Table]:
    measured = {n: r.quantize.rows for n, r in systems.items() if r.quantize.rows}
    skipped = [f"{n}: {r.quantize.skipped}" for n, r in systems.items() if r.quantize.skipped]
    if not measured:
        return []
    labels = list(dict.fromkeys(label for rows in measured.values() for label in rows))
    rows = []
    for name, got in measured.items():
        base = got.get("unquantized") or QuantRow()
        quant = [got[label] for label in labels if label != "unquantized" and label in got]
        lift = [q.leak_rate - base.leak_rate for q in quant if base.leak_rate is not None]
        ratio = [q.answer_probability / base.answer_probability for q in quant
                 if base.answer_probability and q.answer_probability is not None]
        cell = lambda label: got.get(label) or QuantRow()  # noqa: E731
        rows.append([name] + [f"{_f(cell(label).leak_rate, 2)} / {_f(cell(label).answer_probability, 4)}"
                              for label in labels] +
                    [_f(max(lift), 2) if lift else "—", _f(max(ratio), 2) if ratio else "—"])
    note = ("Plain forget questions (the attacked items) through the system with its linear weights rounded "
            "(symmetric round-to-nearest, per output channel or per group of columns; embeddings and output head "
            "kept unless attacks.quantize_embeddings), dequantized to fp32. Cells: leak rate / mean answer "
            "probability. Recovery: the largest leak-rate rise and answer-probability ratio over the unquantized "
            "system.") + ("\nSkipped: " + "; ".join(skipped) if skipped else "")
    return [("Quantization attack (forget questions): leak rate / answer probability",
             ["system"] + labels + ["max leak rise", "max P(answer) ratio"], rows, note)]


def _before_after(attack) -> str:
    if attack.after is None:
        return "n/a"
    before = attack.before.leak_rate if attack.before is not None else None
    return f"{_f(before, 2)} → {_f(attack.after.leak_rate, 2)}"


def finetune_table(systems: Systems) -> list[Table]:
    """The fine-tuning attacks' leak rates before and after, per system that ran one."""
    ran = {n: r for n, r in systems.items() if r.relearn.after is not None or r.benign_relearn.after is not None}
    if not ran:
        return []
    skipped = sorted({f"{n}: {a.skipped}" for n, r in systems.items() for a in (r.relearn, r.benign_relearn)
                      if a.skipped})
    rows = [[name, _before_after(r.relearn), _before_after(r.benign_relearn)] for name, r in ran.items()]
    return [("Fine-tuning attacks (forget questions): leak rate before → after",
             ["system", "relearn (half the forget facts)", "benign relearn (texts naming no forget subject)"], rows,
             "The weights fine-tuned, then the probed forget items' plain questions asked: relearn teaches the "
             "even-numbered forget items and asks the odd ones; benign relearning teaches a few retain items that "
             "name no forget subject and asks the attacked items." + ("\nSkipped: " + "; ".join(skipped) if skipped else ""))]


def sequential_table(doc: dict) -> list[Table]:
    """Sequential requests: after each request, forget quality / answer probability per request's
    forget set, forget quality over the requests so far, model utility, training time."""
    return sequential_section(parse_doc(doc))


def sequential_section(systems: Systems) -> list[Table]:
    steps = sequential_steps(systems)
    if not steps:
        return []
    labels = [r.request for r in steps[0][1].requests]
    rows = []
    for name, seq in steps:
        res = systems[name]
        rows.append([name, str(seq.after_request)] +
                    [f"{_f(r.forget_quality, 4)} / {_f(r.answer_probability, 4)}" for r in seq.requests] +
                    [_f(seq.forget_quality_so_far, 4), _f(res.metrics.forget_quality, 4),
                     _f(res.metrics.model_utility), _f(res.unlearning_seconds, 0)])
    note = ("Request k is unlearnt from the checkpoint request k-1 left (its training config: model: run:<request "
            "k-1's config>); target+guard@k is the target behind a guard built over requests 1..k (a served policy "
            "rebuilt in place, taken up without a restart), its training time the policy build. Cells per request's forget set: forget quality (KS p-value of its items' truth ratios "
            "against the retain model's on the same items) / mean answer probability; a request not yet made "
            "shows what the model still knows of it. So far: forget quality over requests 1..k; all: the "
            "benchmark's whole forget set.")
    return [("Sequential requests: forget quality / answer probability per request after each one",
             ["checkpoint", "requests done"] + [f"request {i}: {label}" for i, label in enumerate(labels, 1)] +
             ["forget quality so far", "forget quality (all)", "model utility", "training s"], rows, note)]
