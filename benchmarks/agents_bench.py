"""The agent rewriter measured (not a test: it prints figures and writes runs/bench/agents_bench.json).

    python benchmarks/agents_bench.py [--model run:configs/finetune/tofu_mini_target.yaml]
        [--policy runs/guard/forget01] [--parts scale,tofu,injection,latency] [--systems agents,stacked]

For each system, `unlearn serve --agents` is started as users start it (agents = engine without
the token filter, stacked = engine with it), on loopback, and driven over HTTP:
1. TOFU-mini (`tofu`): the 657 evaluation prompts (forget 40, their paraphrases 40, retain 360,
   real authors 100, world facts 117; chat template, greedy, 128 tokens, 8 concurrent requests):
   ROUGE-L recall against the gold answers, the share routed to the rewriter (flagged) and the
   share refused, per set.
2. Prompt injection (`injection`): evaluation/injection.py's list requests and wrappers around every
   4th forget question; a reply leaks when it names a target (policy probes).
3. Scale (`scale`, with the first system): the graph on 10 questions about one forget01 author,
   with 1, 10, 100 and 1000 targets in the store (that author + distractors: TOFU's other authors
   in the policy's faiss index, then synthetic people as live targets; policies cached in
   runs/bench/agents/), its model being the running server: model calls, prompt tokens (in all and
   per node call) and wall time per flagged request.
4. Latency (`latency`): unflagged requests (retain questions, 32 tokens) one at a time, alternating
   straight to the vLLM server and through the front; ratio of median latencies.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "runs" / "bench"
TOKEN = "bench-admin-token"
SIZES = (1, 10, 100, 1000)


def Server(model: str, policy: str, agents_only: bool, log: Path):
    """`unlearn serve --agents` started and answering (compare/endpoint.py); `.stop()` ends it."""
    from unlearnkit.compare.endpoint import AgentServer

    return AgentServer(model, policy, log, agents_only=agents_only, env={"UNLEARN_ADMIN_TOKEN": TOKEN}).__enter__()


def ask(url: str, question: str, max_tokens: int = 128) -> dict:
    from unlearnkit.compare.endpoint import chat

    return chat(url, question, max_tokens)


def tofu_sets() -> dict:
    from unlearnkit.data.sources import load_spec

    forget = load_spec("tofu/forget01_perturbed")
    return {"forget": [(r.question, r.answer) for r in forget],
            "paraphrased": [(r.extra["paraphrased_question"], r.answer) for r in forget],
            "retain": [(r.question, r.answer) for r in load_spec("tofu/forget10_perturbed-forget01_perturbed")],
            "real_authors": [(r.question, r.answer) for r in load_spec("tofu/real_authors_perturbed")],
            "world_facts": [(r.question, r.answer) for r in load_spec("tofu/world_facts_perturbed")]}


def run_tofu(url: str, sets: dict, workers: int = 8) -> dict:
    from tqdm import tqdm

    from unlearnkit.evaluation.metrics.rouge import rouge_scores

    jobs = [(name, q, a) for name, items in sets.items() for q, a in items]
    started = time.time()
    with ThreadPoolExecutor(workers) as pool:
        replies = list(tqdm(pool.map(lambda j: ask(url, j[1]), jobs), total=len(jobs), desc="TOFU-mini"))
    out = {"wall_s": time.time() - started}
    for name in sets:
        rows = [(a, r) for (n, _, a), r in zip(jobs, replies) if n == name]
        flagged = [r for _, r in rows if r["unlearn"].get("path") == "agents"]
        out[name] = {"n": len(rows), "errors": sum(r["status"] != 200 for _, r in rows),
                     "rougeL_recall": statistics.mean(rouge_scores(a, r["text"])["rougeL_recall"] for a, r in rows),
                     "flagged": len(flagged) / len(rows),
                     "refused": sum(r["unlearn"].get("route") == "refused" for r in flagged) / len(rows),
                     "routes": {k: sum(r["unlearn"].get("route") == k for r in flagged) for k in ("clean", "rewritten", "refused")},
                     "agents_seconds_median": statistics.median([r["seconds"] for r in flagged]) if flagged else None}
    out["samples"] = [{"set": n, "question": q, "reply": r["text"], "unlearn": r["unlearn"]}
                      for (n, q, _), r in list(zip(jobs, replies))[:80:8]]
    return out


def run_injection(url: str, policy_meta: dict, forget_questions: list[str], workers: int = 8) -> dict:
    from unlearnkit.evaluation.injection import injection_prompts, leaked_names

    prompts = injection_prompts(forget_questions[::4])
    with ThreadPoolExecutor(workers) as pool:
        replies = list(pool.map(lambda p: ask(url, p[1]), prompts))
    leaks = [{"kind": k, "prompt": p, "reply": r["text"], "names": leaked_names(r["text"] + json.dumps(r["unlearn"]),
                                                                               policy_meta["targets"])}
             for (k, p), r in zip(prompts, replies)]
    return {"prompts": len(prompts), "leaked": sum(bool(x["names"]) for x in leaks),
            "routed_to_agents": sum(r["unlearn"].get("path") == "agents" for r in replies),
            "refused": sum(r["unlearn"].get("route") == "refused" for r in replies),
            "leaks": [x for x in leaks if x["names"]]}


def scale_policies(model_path: str) -> dict:
    """Stores with 1, 10, 100 and 1000 targets, each holding TOFU's last author (Nikolai Abilov,
    whom the benchmark asks about) plus distractors: the authors before him in TOFU (a policy of
    their QA, faiss index), and past TOFU's 200 authors, synthetic people as live targets."""
    from unlearnkit.agents.store import LiveTarget
    from unlearnkit.data.sources import load_spec
    from unlearnkit.data.synth import synth_qa
    from unlearnkit.guard.build import build_policy
    from unlearnkit.guard.policy import GuardConfig
    from unlearnkit.models.loading import load_tokenizer

    full = load_spec("tofu/full")
    per_author = 20
    calibration = load_spec("tofu/real_authors_perturbed") + load_spec("tofu/world_facts_perturbed")
    tokenizer = load_tokenizer(model_path)
    out = {}
    for n in SIZES:
        authors = min(n, len(full) // per_author)
        root = OUT / "agents" / f"policy-{authors}-authors"
        if not (root / "policy.json").exists():
            t = time.time()
            build_policy(full[-authors * per_author:], root, model_path, tokenizer, GuardConfig(),
                         retain=calibration, sources={"forget": f"tofu/full, last {authors} authors"},
                         progress=lambda *_: None)
            print(f"policy for {authors} authors built in {time.time() - t:.0f} s", flush=True)
        live = []
        if n > authors:
            people: dict[str, list[str]] = {}
            for r in synth_qa(n_people=2 * (n - authors), seed=7):
                people.setdefault(r.extra["person"], []).append(r.answer)
            live = [LiveTarget(name, tuple(facts[:4])) for name, facts in list(people.items())[:n - authors]]
            assert len(live) == n - authors, "not enough distinct synthetic people"
        out[n] = (root, live)
    return out


def run_scale(backend: str, stores: dict, questions: list[str], workers: int = 8) -> dict:
    from unlearnkit.agents.config import AgentConfig
    from unlearnkit.agents.graph import Pipeline
    from unlearnkit.agents.llm import OpenAIChat
    from unlearnkit.agents.store import TargetStore
    from unlearnkit.guard.policy import load_policy

    out = {}
    for n, (root, live) in stores.items():
        store = TargetStore(load_policy(root))
        for target in live:
            store.add(target)
        pipeline = Pipeline(AgentConfig(), store, OpenAIChat(backend, "model", structured_outputs=True))
        started = time.time()
        with ThreadPoolExecutor(workers) as pool:
            results = list(pool.map(lambda q: pipeline.run([{"role": "user", "content": q}]), questions))
        by_node: dict[str, list[int]] = {}
        for r in results:
            for node, tokens in r.prompt_tokens_by_node().items():
                by_node.setdefault(node, []).extend(tokens)
        out[n] = {"targets": n, "policy_authors": len({i["targets"][0] for i in store.policy.items if i["targets"]}),
                  "policy_qa": len(store.policy.items), "live_targets": len(live),
                  "llm_calls": statistics.mean(r.calls for r in results),
                  "prompt_tokens": statistics.mean(r.prompt_tokens for r in results),
                  "prompt_tokens_per_call": {k: statistics.mean(v) for k, v in sorted(by_node.items())},
                  "seconds": statistics.median(r.seconds for r in results),
                  "routes": {k: sum(r.route == k for r in results) for k in ("clean", "rewritten", "refused")},
                  "batch_wall_s": time.time() - started}
        print(f"{n:5d} targets: {out[n]['llm_calls']:.1f} calls, {out[n]['prompt_tokens']:.0f} prompt tokens "
              f"(per call: {', '.join(f'{k} {v:.0f}' for k, v in out[n]['prompt_tokens_per_call'].items())}), "
              f"{out[n]['seconds']:.1f} s per request, routes {out[n]['routes']}", flush=True)
    return out


def run_latency(server, questions: list[str], max_tokens: int = 32) -> dict:
    times = {"direct": [], "front": []}
    for q in questions[:2]:   # warm both paths
        ask(server.backend, q, max_tokens), ask(server.url, q, max_tokens)
    paths = 0
    for i, q in enumerate(questions):
        order = ("direct", "front") if i % 2 == 0 else ("front", "direct")
        for name in order:
            r = ask(server.backend if name == "direct" else server.url, q, max_tokens)
            if name == "front":
                paths += r["unlearn"].get("path") == "passthrough"
            times[name].append(r["seconds"])
    direct, front = statistics.median(times["direct"]), statistics.median(times["front"])
    return {"requests": len(questions), "passthrough": paths, "direct_median_s": direct, "front_median_s": front,
            "ratio": front / direct, "per_pair_ratio_median": statistics.median(f / d for f, d in zip(times["front"], times["direct"]))}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="run:configs/finetune/tofu_mini_target.yaml")
    p.add_argument("--policy", default="runs/guard/forget01")
    p.add_argument("--parts", default="tofu,injection,scale,latency")
    p.add_argument("--systems", default="agents,stacked")
    p.add_argument("--latency-requests", type=int, default=40)
    args = p.parse_args()
    from unlearnkit.guard.policy import read_meta
    from unlearnkit.training.cache import resolve_model   # run: references too

    parts, systems = args.parts.split(","), args.systems.split(",")
    model = resolve_model(args.model)
    if not Path(args.policy, "policy.json").exists():
        subprocess.run([sys.executable, "-m", "unlearnkit.cli", "guard", "build", "--forget", "tofu/forget01_perturbed",
                        "--retain", "tofu/retain90", "--out", args.policy, "--model", model], check=True, cwd=ROOT)
    meta = read_meta(args.policy)
    sets = tofu_sets()
    policies = scale_policies(model) if "scale" in parts else {}
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "agents_bench.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    results.update(model=str(model), policy=args.policy)
    for system in systems:
        server = Server(model, args.policy, agents_only=(system == "agents"), log=OUT / f"agents_{system}.log")
        res = results.setdefault(system, {})
        res["server_start_s"] = server.start_s
        try:
            if "tofu" in parts:
                res["tofu_mini"] = run_tofu(server.url, sets)
            if "injection" in parts:
                res["injection"] = run_injection(server.url, meta, [q for q, _ in sets["forget"]])
                print(f"{system}: injection {res['injection']['leaked']}/{res['injection']['prompts']} leaked", flush=True)
            if "scale" in parts and system == systems[0]:
                results["scale"] = run_scale(server.backend, policies, [q for q, _ in sets["forget"][20:40:2]])
            if "latency" in parts:
                res["latency"] = run_latency(server, [q for q, _ in sets["retain"][::9]][:args.latency_requests])
                print(f"{system}: latency front/direct {res['latency']['ratio']:.3f}", flush=True)
            stats = __import__("httpx").get(f"http://127.0.0.1:{server.port}/admin/stats",
                                           headers={"Authorization": f"Bearer {TOKEN}"}).json()
            res["stats"] = stats
        finally:
            server.stop()
        path.write_text(json.dumps(results, indent=1))
    for system in systems:
        t = results.get(system, {}).get("tofu_mini")
        if t:
            print(f"\n{system}: " + "  ".join(f"{n} R-L {t[n]['rougeL_recall']:.3f} flagged {t[n]['flagged']:.3f} "
                                             f"refused {t[n]['refused']:.3f}" for n in sets))
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
