"""A guard policy of thousands of targets against the 4-target TOFU-mini policy (not a test: it
prints figures).

    python benchmarks/many_targets.py --people 10000 [--questions-per-person 2] [--max-retain 1000]
                                      [--baseline runs/guard/forget01] [--skip-build] [--interleaved]
                                      [--exact-check]

1. Build: N fictitious authors (data/synth.py's people and questions; paraphrases kept, perturbed
   answers left out: a strict policy does not read them, and drawing them is quadratic in N) as
   the forget set (people --retain-people onwards), the first --retain-people others as the retain set the threshold is calibrated on (capped
   by --max-retain), compiled with guard/build.py:build_policy for the default model's tokenizer
   (`smollm2`, fetched offline). Build time, size on disk.
2. Runtime, each policy in a fresh process (so its resident memory is its own): RSS before/after
   loading the policy into a GuardRuntime and after warm_up; classification (GuardRuntime.decide
   on chat-template prompt ids) of the same 200 prompts for both policies (TOFU forget01 questions
   and paraphrases, synthetic forget questions, TOFU retain questions: each policy flags about a
   quarter by name), one at a time and in batches of 16, embedding cache cleared between the two;
   the guards of the 200 (GuardRuntime.guards: cache entries and RSS growth, time per request); the
   guard's own work per decode step (GuardSlots.apply on a [32, vocab] logits tensor: 16 flagged
   rows, 16 with the always-on names check) over 60 steps.
3. --interleaved: classification only, both policies in one process, prompt by prompt in ABBA order
   with every cache emptied before each request (the ratio with a bootstrap interval: the figure
   the "within 10%" bar is read on; separate processes minutes apart differ by ~5% run to run).
4. --exact-check: a graph-indexed policy's decisions against exact search of the same vectors.
Writes runs/bench/many_targets.json (merged with earlier runs, keyed by policy).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = 200


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def dir_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file()) / 2 ** 20


def synthetic_sets(n_forget: int, n_retain: int, per_person: int, seed: int = 0):
    """(forget, retain) QA lists: the last n_forget people (their first `per_person` questions)
    and the first n_retain people (all their questions)."""
    from unlearnkit.data.records import QA
    from unlearnkit.data.synth import _facts, make_people

    people = make_people(n_forget + n_retain, seed)

    def qa(person, facts):
        return [QA(q, a, {"paraphrased_question": pq, "paraphrased_answer": pa, "person": person.name})
                for q, a, pq, pa, _, _ in facts]
    retain = [r for p in people[:n_retain] for r in qa(p, _facts(p))]
    forget = [r for p in people[n_retain:] for r in qa(p, _facts(p)[:per_person])]
    return forget, retain


def model_path() -> str:
    from unlearnkit.models.fetch import fetch

    return str(fetch("smollm2"))


def build(people: int, per_person: int, retain_people: int, max_retain: int, out: Path) -> dict:
    from unlearnkit.guard.build import build_policy
    from unlearnkit.guard.policy import GuardConfig
    from unlearnkit.models.loading import load_tokenizer

    path = model_path()
    tok = load_tokenizer(path)
    t0 = time.perf_counter()
    forget, retain = synthetic_sets(people, retain_people, per_person)
    gen_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    meta = build_policy(forget, out, path, tok, GuardConfig(max_retain=max_retain), retain=retain,
                        sources={"forget": f"synth {people} people x {per_person} questions",
                                 "retain": f"synth {retain_people} people"},
                        progress=lambda m: print(f"  [{time.perf_counter() - t0:7.1f} s] {m[:160]}", flush=True))
    build_s = time.perf_counter() - t0
    cal = meta["calibration"]
    return {"people": people, "questions_per_person": per_person, "forget_items": len(forget),
            "targets": len(meta["targets"]), "retain_prompts": cal["n_retain"], "generate_s": gen_s,
            "build_s": build_s, "size_mb": dir_mb(out), "threshold": cal["threshold"],
            "retain_fpr": cal["retain_fpr"], "forget_recall": cal["forget_recall"],
            "paraphrase_recall": cal["paraphrase_recall"]}


def bench_prompts(tok) -> list[list[int]]:
    """The same 200 prompts for every policy, as chat-template token ids."""
    from unlearnkit.data.formatting import prompt_text
    from unlearnkit.data.sources import load_spec

    tofu = load_spec("tofu/forget01_perturbed")
    synth, _ = synthetic_sets(50, 300, 10)      # people 300..349: in every policy built with 300 retain people
    synth = [synth[10 * i + i % 10] for i in range(50)]     # one question each, of every kind
    retain = load_spec("tofu/forget10-forget01")
    questions = ([r.question for r in tofu] + [r.extra["paraphrased_question"] for r in tofu])[:50] + \
        [r.question for r in synth] + [r.question for r in retain[::3]][:100]
    assert len(questions) == PROMPTS, len(questions)
    return [tok(prompt_text(tok, q), add_special_tokens=False)["input_ids"] for q in questions]


def quantile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def measure(policy: str) -> dict:
    """Runtime figures for one policy (run in its own process)."""
    import torch

    from unlearnkit.guard.decode import GuardSlots
    from unlearnkit.guard.policy import load_policy
    from unlearnkit.guard.runtime import GuardRuntime, RequestArgs
    from unlearnkit.models.loading import load_tokenizer

    torch.set_num_threads(1)
    tok = load_tokenizer(model_path())
    ids = bench_prompts(tok)
    from unlearnkit.guard.embedder import embed
    embed(["warm up the embedder"])
    out: dict = {"rss_before_mb": rss_mb()}
    t0 = time.perf_counter()
    rt = GuardRuntime(load_policy(policy, tok), tok)
    out["load_s"] = time.perf_counter() - t0
    out["rss_loaded_mb"] = rss_mb()
    t0 = time.perf_counter()
    rt.warm_up()
    out["warm_up_s"] = time.perf_counter() - t0
    out["rss_warm_mb"] = rss_mb()
    out["targets"], out["items"] = len(rt.policy.targets), len(rt.policy.items)
    rt.decide([tok("Hello, how are you today?")["input_ids"]], [RequestArgs()])
    single, flagged = [], 0
    for p in ids:
        t0 = time.perf_counter()
        d = rt.decide([p], [RequestArgs()])[0]
        single.append(1000 * (time.perf_counter() - t0))
        flagged += d.flagged
    rt.classifier._cache.clear()           # the batches embed afresh, like the single requests
    batches = []
    for i in range(0, len(ids), 16):
        t0 = time.perf_counter()
        rt.decide(ids[i:i + 16], [RequestArgs()] * len(ids[i:i + 16]))
        batches.append(1000 * (time.perf_counter() - t0))
    out.update(single_p50_ms=quantile(single, 0.5), single_p95_ms=quantile(single, 0.95), flagged=flagged,
               batch16_p50_ms=quantile(batches, 0.5), batch16_p95_ms=quantile(batches, 0.95))
    tries, matchers, rss = len(rt._tries), len(rt._matchers), rss_mb()
    per_guard = []
    guards = []
    for p in ids:
        t0 = time.perf_counter()
        guards += rt.guards([(p, None)])
        per_guard.append(1000 * (time.perf_counter() - t0))
    out.update(guards_p50_ms=quantile(per_guard, 0.5), guards_p95_ms=quantile(per_guard, 0.95),
               cache_tries_added=len(rt._tries) - tries, cache_matchers_added=len(rt._matchers) - matchers,
               rss_guards_growth_mb=rss_mb() - rss)
    # per decode step: 16 flagged rows and 16 always-on rows
    chosen = [g for g in guards if g is not None and not g.always_on][:16] + \
             [g for g in guards if g is not None and g.always_on][:16]
    slots, outputs = GuardSlots(), []
    for n, guard in enumerate(chosen):
        outputs.append([])
        slots.add(n, guard, outputs[-1])
    text = tok("The author was born in a small town and wrote many novels about love, war and family life.",
               add_special_tokens=False)["input_ids"]
    logits = torch.zeros(len(chosen), rt.vocab_size)
    steps = []
    for step in range(60):
        for o in outputs:
            o.append(text[step % len(text)])
        t0 = time.perf_counter()
        slots.apply(logits)
        steps.append(1000 * (time.perf_counter() - t0))
    out.update(step_rows=len(chosen), step_flagged_rows=sum(not g.always_on for g in chosen),
               step_p50_ms=quantile(steps, 0.5), step_p95_ms=quantile(steps, 0.95),
               step_first_ms=steps[0], rss_end_mb=rss_mb())
    return out


def interleaved(baseline: str, policy: str, rounds: int = 3, resamples: int = 2000) -> dict:
    """Classification one request at a time by both policies in one process, prompt by prompt in ABBA
    order, every cache (the embedder's recent texts, the classifier's searches) emptied before each
    request: the ratio of the two medians with a bootstrap interval over requests. Separate processes
    measured minutes apart differ by about 5% between runs; this ratio is what the 10% bar is read on."""
    import numpy as np
    import torch

    from unlearnkit.guard import embedder
    from unlearnkit.guard.policy import load_policy
    from unlearnkit.guard.runtime import GuardRuntime, RequestArgs
    from unlearnkit.models.loading import load_tokenizer

    torch.set_num_threads(1)
    tok = load_tokenizer(model_path())
    ids = bench_prompts(tok)
    runtimes = [GuardRuntime(load_policy(p, tok), tok) for p in (baseline, policy)]
    for rt in runtimes:
        rt.warm_up()
        rt.decide([ids[0]], [RequestArgs()])

    def once(rt, prompt) -> float:
        embedder._RECENT.clear()
        rt.classifier._cache.clear()
        t0 = time.perf_counter()
        rt.decide([prompt], [RequestArgs()])
        return 1000 * (time.perf_counter() - t0)

    times: list[list[float]] = [[], []]
    for r in range(rounds):
        for n, prompt in enumerate(ids):
            for k in ((0, 1) if (n + r) % 2 == 0 else (1, 0)):
                times[k].append(once(runtimes[k], prompt))
    a, b = np.array(times[0]), np.array(times[1])
    rng = np.random.default_rng(0)
    boots = [np.median(b[i]) / np.median(a[i]) for i in (rng.integers(0, len(a), len(a)) for _ in range(resamples))]
    return {"requests": len(a), "p50_ms_baseline": float(np.median(a)), "p50_ms_policy": float(np.median(b)),
            "ratio_of_p50": float(np.median(b) / np.median(a)),
            "ci95": [float(x) for x in np.quantile(boots, [0.025, 0.975])]}


def exact_check(policy: str, people: int, per_person: int, retain_people: int, batch: int = 64) -> dict:
    """A graph-indexed policy's classifier against the same policy searched exactly (its vectors read back
    from the graph's flat storage into a flat index): decisions, best similarity and nearest items on every
    forget question's paraphrase and the 200 benchmark prompts."""
    import dataclasses

    import faiss
    import numpy as np

    from unlearnkit.guard.classifier import PromptClassifier
    from unlearnkit.guard.policy import load_policy
    from unlearnkit.models.loading import load_tokenizer

    tok = load_tokenizer(model_path())
    pol = load_policy(policy, tok)
    if not isinstance(pol.index, faiss.IndexHNSWFlat):
        raise SystemExit(f"{policy}: its index is {type(pol.index).__name__}, not a HNSW graph: nothing to check")
    flat = faiss.IndexFlatIP(pol.index.d)
    flat.add(np.stack([pol.index.reconstruct(i) for i in range(pol.index.ntotal)]))
    forget, _ = synthetic_sets(people, retain_people, per_person)
    texts = [r.paraphrased_question for r in forget if r.paraphrased_question] + \
        [tok.decode(ids) for ids in bench_prompts(tok)]
    graph_c, flat_c = PromptClassifier(pol), PromptClassifier(dataclasses.replace(pol, index=flat))
    same, nearest, worst = 0, 0, 0.0
    for start in range(0, len(texts), batch):
        for g, f in zip(graph_c.classify(texts[start:start + batch]), flat_c.classify(texts[start:start + batch])):
            same += g.flagged == f.flagged
            nearest += g.nearest == f.nearest
            worst = max(worst, abs(g.score - f.score))
    return {"prompts": len(texts), "same_decision": same, "same_nearest_items": nearest, "max_score_difference": worst}


def measure_in_subprocess(policy: str) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--measure", policy], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"measuring {policy} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--people", type=int, default=10000, help="targets (fictitious authors) in the big policy")
    parser.add_argument("--questions-per-person", type=int, default=10, help="forget questions per person (2..10)")
    parser.add_argument("--retain-people", type=int, default=300)
    parser.add_argument("--max-retain", type=int, default=1000)
    parser.add_argument("--baseline", default=str(ROOT / "runs" / "guard" / "forget01"))
    parser.add_argument("--policy", help="where the big policy goes (default runs/guard/synth<N>x<q>)")
    parser.add_argument("--skip-build", action="store_true", help="measure an existing --policy")
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench" / "many_targets.json"))
    parser.add_argument("--interleaved", action="store_true",
                        help="only classification, both policies in one process, prompt by prompt (the ratio read on)")
    parser.add_argument("--exact-check", action="store_true",
                        help="only compare a graph-indexed --policy's decisions with exact search (see exact_check)")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("UNLEARN_TOFU_DIR", str(ROOT.parent / "shared" / "data" / "tofu"))
    if args.measure:
        print(json.dumps(measure(args.measure)))
        return 0
    if not 2 <= args.questions_per_person <= 10:
        parser.error("--questions-per-person must be between 2 (a target is a name asked about twice) and 10")
    policy = Path(args.policy or ROOT / "runs" / "guard" / f"synth{args.people}x{args.questions_per_person}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    report = json.loads(out.read_text()) if out.is_file() else {}
    if args.exact_check:
        got = exact_check(str(policy), args.people, args.questions_per_person, args.retain_people)
        report.setdefault(policy.name, {})["exact_check"] = got
        out.write_text(json.dumps(report, indent=1))
        print(json.dumps(got))
        return 0
    if args.interleaved:
        got = interleaved(args.baseline, str(policy))
        report.setdefault(policy.name, {})["interleaved"] = got
        out.write_text(json.dumps(report, indent=1))
        print(f"classification one at a time, interleaved: p50 {got['p50_ms_baseline']:.2f} ms (4 targets) vs "
              f"{got['p50_ms_policy']:.2f} ms ({policy.name}), ratio {got['ratio_of_p50']:.3f} "
              f"(95% CI {got['ci95'][0]:.3f}-{got['ci95'][1]:.3f}, {got['requests']} requests each)")
        return 0
    if not args.skip_baseline:
        if not (Path(args.baseline) / "policy.json").is_file():
            subprocess.run([sys.executable, "-m", "unlearnkit.cli", "guard", "build", "--forget", "tofu/forget01_perturbed",
                            "--retain", "tofu/retain90", "--model", model_path(), "--out", args.baseline],
                           check=True, cwd=ROOT)
        report["baseline"] = {"policy": args.baseline, "size_mb": dir_mb(Path(args.baseline)),
                              **measure_in_subprocess(args.baseline)}
        print("baseline", json.dumps(report["baseline"]), flush=True)
    key = policy.name
    entry = report.get(key, {}) if args.skip_build else {}
    if not args.skip_build:
        print(f"building {policy} ({args.people} people x {args.questions_per_person} questions)", flush=True)
        entry["build"] = build(args.people, args.questions_per_person, args.retain_people, args.max_retain, policy)
        print("build", json.dumps(entry["build"]), flush=True)
    entry["runtime"] = {"policy": str(policy), "size_mb": dir_mb(policy), **measure_in_subprocess(str(policy))}
    print(key, json.dumps(entry["runtime"]), flush=True)
    report[key] = entry
    base = report.get("baseline")
    if base:
        mine = entry["runtime"]
        for name in ("single_p50_ms", "single_p95_ms", "batch16_p50_ms", "batch16_p95_ms", "guards_p50_ms", "step_p50_ms"):
            print(f"{name:16s} 4 targets {base[name]:8.2f}   {mine['targets']} targets {mine[name]:8.2f}   "
                  f"ratio {mine[name] / base[name]:.3f}")
    out.write_text(json.dumps(report, indent=1))
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
