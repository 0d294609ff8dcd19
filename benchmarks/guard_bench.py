"""Cost of the runtime guard, measured side by side in one run (not a test: it prints figures).

    python benchmarks/guard_bench.py [--model run:configs/finetune/tofu_mini_target.yaml]
                                     [--policy runs/guard/forget01] [--skip-server]
                                     [--interleaved [--same-length]] [--rounds N] [--max-tokens N]
                                     [--without-quotes]

1. Throughput: the same prompts (TOFU-mini forget questions, their paraphrases and retain
   questions: mixed flagged and unflagged) through plain and guarded offline vLLM, alternating
   plain/guarded for --rounds rounds in ABBA order (with --interleaved: one plain and one guarded
   engine started once and kept, each round's batch sent to them in turn, so engine start-up and
   the machine's drift between engine runs stay out of the pairs; every round's questions begin
   "Question <round>: ", so the kept guarded engine classifies each round afresh instead of
   answering from its classifier's cache); generated tokens per second of `llm.generate` (engine
   start excluded); the guarded/plain ratio of each round's pair, their mean and its 95% confidence
   interval (separate engine runs vary by about +-10%: read the interval, not one round). The
   guarded engine runs the always-on names check on every unflagged request. A guarded answer can
   run longer than the plain one (a withheld name sends the model elsewhere), which changes the
   batch's work as well as its speed; --same-length makes every answer run to --max-tokens in both
   engines, so the ratio is the guard's own cost. The guarded engine also times the guard's own
   calls inside it (vLLM's `update_state` and `apply` on the adapter: admission, classification and
   every step's work; benchmarks/guard_clock.py, the class the guarded engine loads): their share of its
   generate time is the guard's cost read within one run, free of the drift between engines, though
   it leaves out any cost the guard causes outside its calls (which the ratio includes). Also the
   guard's own work per decode step, timed without the model.
2. Classification cost per request: the classifier on one prompt at a time (median, p90), and per
   request when a step admits a batch of 16 together (how vLLM admits a burst).
3. Load test: `unlearn serve --guard` on loopback, 64 concurrent streaming requests (chat and
   completions, flagged and unflagged, some tightening the policy through vllm_xargs): every one
   must finish with [DONE]; then malformed/loosening vllm_xargs must get HTTP 400 and the server
   must still answer afterwards.
Writes runs/bench/guard_bench.json. The policy is built first if missing (tofu/forget01_perturbed,
calibrated on tofu/retain90).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def unlearn(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "unlearnkit.cli", *args], check=True, cwd=ROOT)


def prompts_for(tokenizer, n_retain: int, lead: str = ""):
    """The benchmark's questions and their chat prompts' token ids, each question after `lead`."""
    from unlearnkit.data.formatting import prompt_text
    from unlearnkit.data.sources import load_spec

    forget = load_spec("tofu/forget01_perturbed")
    retain = load_spec("tofu/forget10-forget01")[:n_retain]
    questions = [r.question for r in forget] + [r.paraphrased_question for r in forget] + \
                [r.question for r in retain]
    ids = [tokenizer(prompt_text(tokenizer, lead + q), add_special_tokens=False)["input_ids"] for q in questions]
    return questions, ids


def round_lead(r: int) -> str:
    """Round r's prompts begin with their own words, so an engine kept alive classifies every round
    afresh (the classifier caches the texts it has seen) and both engines get the same prompts."""
    return f"Question {r + 1}: "


def throughput(path: str, policy: str, ids, max_tokens: int, rounds: int) -> dict:
    from unlearnkit.evaluation.vllm_generate import run_vllm
    from unlearnkit.guard.runtime import FQCN, POLICY_ENV

    req = {"prompt_token_ids": ids, "max_tokens": max_tokens, "dtype": "float32", "max_model_len": 1024}
    runs = {"plain": [], "guarded": []}
    outputs = {}
    for r in range(rounds):
        # ABBA: the order alternates, so a drift of the machine over the run cancels out of the pairs
        for name in (("plain", "guarded") if r % 2 == 0 else ("guarded", "plain")):
            extra = {"logits_processors": [FQCN]} if name == "guarded" else {}
            env = {POLICY_ENV: str(Path(policy).resolve())} if name == "guarded" else None
            out = run_vllm(path, {**req, **extra}, env=env)
            tokens = sum(map(len, out["token_ids"]))
            runs[name].append({"tokens": tokens, "seconds": out["generate_s"], "tok_s": tokens / out["generate_s"]})
            outputs[name] = out["token_ids"]
            print(f"round {r + 1} {name:8s} {tokens} tokens in {out['generate_s']:.1f} s = "
                  f"{tokens / out['generate_s']:.1f} tok/s", flush=True)
    plain = statistics.median(x["tok_s"] for x in runs["plain"])
    guarded = statistics.median(x["tok_s"] for x in runs["guarded"])
    ratios = [g["tok_s"] / p["tok_s"] for p, g in zip(runs["plain"], runs["guarded"])]
    return {"runs": runs, "plain_tok_s": plain, "guarded_tok_s": guarded, "ratio": guarded / plain,
            "pair_ratios": ratios, "ratio_mean": statistics.mean(ratios), "ratio_ci95": ci95(ratios),
            "prompts": len(ids), "max_tokens": max_tokens, "outputs": outputs}


RESULT = "GUARD_BENCH_RESULT "


def worker(kind: str, path: str, ids_file: str, max_tokens: int, same_length: bool = False) -> int:
    """One engine (plain, or guarded by $UNLEARN_GUARD_POLICY) kept alive: each line on stdin, a round
    number, generates that round's batch once and answers one RESULT line (tokens, seconds) on stdout."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    from guard_clock import CLOCK, CLOCK_ENV, open_clock

    rounds = [[TokensPrompt(prompt_token_ids=p) for p in ids] for ids in json.loads(Path(ids_file).read_text())]
    clock = open_clock(os.environ[CLOCK_ENV]) if kind == "guarded" else None
    llm = LLM(model=path, dtype="float32", max_model_len=1024, seed=0, enforce_eager=True,
              logits_processors=["guard_clock:UnlearnGuard"] if kind == "guarded" else None)
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=same_length)
    llm.generate(rounds[-1][:8], params, use_tqdm=False)     # warm up on the extra batch, which is never measured
    print(RESULT + json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        prompts = rounds[int(line)]
        before = list(clock) if clock is not None else None
        started = time.perf_counter()
        outs = llm.generate(prompts, params, use_tqdm=False)
        seconds = time.perf_counter() - started
        got = {"tokens": sum(len(o.outputs[0].token_ids) for o in outs), "seconds": seconds}
        if clock is not None:
            if clock[1] == before[1]:
                raise SystemExit("the guard's calls were not timed: the engine did not load guard_clock "
                                 f"(benchmarks/ on PYTHONPATH, ${CLOCK_ENV} set?) or the policy is not loaded")
            got.update({f"guard_{key}": clock[n] - before[n] for n, key in enumerate(CLOCK) if key != "calls"})
        print(RESULT + json.dumps(got), flush=True)
    return 0


def _answer(proc) -> dict:
    for line in proc.stdout:
        if line.startswith(RESULT):
            return json.loads(line[len(RESULT):])
    raise RuntimeError(f"benchmark engine exited (code {proc.wait()})")


def _start_worker(kind: str, path: str, policy: str, ids_file: Path, max_tokens: int, log: Path,
                  same_length: bool = False):
    """A benchmark engine in its own process: guarded ones get the policy, plain ones never do."""
    from unlearnkit.guard.runtime import POLICY_ENV

    env = {**os.environ, "VLLM_LOGGING_LEVEL": "WARNING", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}
    env.pop(POLICY_ENV, None)
    if kind == "guarded":
        from guard_clock import CLOCK_ENV, open_clock

        env[POLICY_ENV] = str(Path(policy).resolve())
        env[CLOCK_ENV] = str(log.with_suffix(".clock"))
        open_clock(env[CLOCK_ENV], create=True)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).parent), env.get("PYTHONPATH")]))
    with open(log, "wb") as stderr:  # the child keeps its own copy of the handle
        return subprocess.Popen([sys.executable, __file__, "--worker", kind, "--model", path, "--ids", str(ids_file),
                                 "--max-tokens", str(max_tokens), *(["--same-length"] if same_length else [])],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env)


def _stop(proc) -> None:
    """End a worker: close its stdin (it then leaves its loop), kill it if it does not exit."""
    try:
        proc.stdin.close()
    except OSError:
        pass
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def interleaved_throughput(path: str, policy: str, tokenizer, n_retain: int, max_tokens: int, rounds: int,
                           same_length: bool = False) -> dict:
    """Throughput of a plain and a guarded engine alive side by side, each round's batch (its own
    prompts: `round_lead`) sent to each in turn (ABBA over rounds); the guarded/plain ratio of each
    round's pair, their mean and 95% CI. `same_length`: every answer runs to max_tokens in both engines
    (end of sequence ignored), so both do the same work and the ratio is the guard's own cost; otherwise
    a guarded answer that runs longer or shorter than the plain one changes the batch's work too."""
    import tempfile

    if rounds < 1:
        raise SystemExit("--interleaved needs --rounds >= 1")
    runs: dict = {"plain": [], "guarded": []}
    with tempfile.TemporaryDirectory() as tmp:
        ids_file = Path(tmp) / "ids.json"
        # one batch per round and one more to warm up on (its texts must not sit in a cache a round reads)
        per_round = [prompts_for(tokenizer, n_retain, round_lead(r))[1] for r in range(rounds + 1)]
        ids_file.write_text(json.dumps(per_round))
        procs: dict = {}
        try:
            for kind in ("plain", "guarded"):     # one at a time: start-up is not measured, but it is heavy
                procs[kind] = _start_worker(kind, path, policy, ids_file, max_tokens, Path(tmp) / f"{kind}.log",
                                            same_length)
                _answer(procs[kind])
            for r in range(rounds):
                for kind in (("plain", "guarded") if r % 2 == 0 else ("guarded", "plain")):
                    procs[kind].stdin.write(f"{r}\n")
                    procs[kind].stdin.flush()
                    got = _answer(procs[kind])
                    runs[kind].append({**got, "tok_s": got["tokens"] / got["seconds"]})
                guarded = runs["guarded"][-1]
                print(f"round {r + 1}: plain {runs['plain'][-1]['tok_s']:.1f} tok/s, guarded {guarded['tok_s']:.1f} "
                      f"tok/s, the guard's own calls {100 * guarded['guard_seconds'] / guarded['seconds']:.2f}% of "
                      f"its time (admitting {guarded['guard_update_state']:.2f} s, steps {guarded['guard_apply']:.2f} s)",
                      flush=True)
        except Exception:
            for kind in procs:
                log = Path(tmp) / f"{kind}.log"
                print(f"{kind} engine log (end):\n{log.read_text(errors='replace')[-2000:]}", file=sys.stderr)
            raise
        finally:
            for proc in procs.values():
                _stop(proc)
    ratios = [g["tok_s"] / p["tok_s"] for p, g in zip(runs["plain"], runs["guarded"])]
    shares = [g["guard_seconds"] / g["seconds"] for g in runs["guarded"]]
    return {"runs": runs, "pair_ratios": ratios, "ratio_mean": statistics.mean(ratios), "ratio_ci95": ci95(ratios),
            "ratio_median": statistics.median(ratios), "guard_share": shares,
            "guard_share_mean": statistics.mean(shares), "guard_share_ci95": ci95(shares),
            "prompts": len(per_round[0]), "max_tokens": max_tokens, "same_length": same_length,
            "mode": "interleaved: two engines kept alive, each round's batch sent to each in turn"}


def ci95(values: list[float]) -> tuple[float, float] | None:
    """Student-t 95% confidence interval of the mean (None with fewer than two values)."""
    if len(values) < 2:
        return None
    from scipy import stats

    mean, sem = statistics.mean(values), statistics.stdev(values) / len(values) ** 0.5
    half = float(stats.t.ppf(0.975, len(values) - 1)) * sem
    return mean - half, mean + half


def classification_cost(path: str, policy: str, ids) -> dict:
    import torch

    from unlearnkit.guard.policy import load_policy
    from unlearnkit.guard.runtime import GuardRuntime, RequestArgs
    from unlearnkit.models.loading import load_tokenizer

    torch.set_num_threads(2)
    tok = load_tokenizer(path)
    rt = GuardRuntime(load_policy(policy, tok), tok)
    rt.decide(ids[:2], [RequestArgs()] * 2)  # warm up (embedder load)
    single, named = [], []
    for p in ids:
        t0 = time.perf_counter()
        d = rt.decide([p], [RequestArgs()])[0]
        ms = 1000 * (time.perf_counter() - t0)
        single.append(ms)
        named.append(d.reason.startswith("names"))
    batched = []
    forget_seen(rt)   # the single-request pass above filled the caches: the batches must embed again
    for i in range(0, len(ids) - 15, 16):
        t0 = time.perf_counter()
        rt.decide(ids[i:i + 16], [RequestArgs()] * 16)
        batched.append(1000 * (time.perf_counter() - t0) / 16)
    embedded = [ms for ms, n in zip(single, named) if not n]
    q = lambda xs, f: statistics.quantiles(xs, n=10)[f] if len(xs) >= 10 else max(xs)  # noqa: E731
    return {"single_median_ms": statistics.median(single), "single_p90_ms": q(single, 8),
            "named_median_ms": statistics.median([m for m, n in zip(single, named) if n] or [0]),
            "embedded_median_ms": statistics.median(embedded or [0]),
            "batch16_per_request_median_ms": statistics.median(batched) if batched else None,
            "share_decided_by_name": sum(named) / len(named)}


def forget_seen(rt) -> None:
    """Empty the classifier's and the embedder's caches of recently seen texts."""
    from unlearnkit.guard import embedder

    rt.classifier._cache.clear()
    with embedder._RECENT_LOCK:
        embedder._RECENT.clear()


def decode_overhead(path: str, policy: str, ids, steps: int = 60) -> dict:
    """The guard's own work per decode step (trie + text matcher + penalty + masking) for every
    flagged prompt in a [len(ids), vocab] logits batch, without the model: the part of a guarded
    step that a plain step does not do."""
    import torch

    from unlearnkit.guard.decode import GuardSlots
    from unlearnkit.guard.policy import load_policy
    from unlearnkit.guard.runtime import GuardRuntime
    from unlearnkit.models.loading import load_tokenizer

    tok = load_tokenizer(path)
    rt = GuardRuntime(load_policy(policy, tok), tok)
    slots, outputs = GuardSlots(), []
    for n, guard in enumerate(rt.guards([(p, None) for p in ids])):
        outputs.append([])
        slots.add(n, guard, outputs[-1])
    text = tok("The author was born in a small town and wrote many novels about love, war and family life.",
               add_special_tokens=False)["input_ids"]
    logits = torch.zeros(len(ids), len(tok))
    times = []
    for step in range(steps):
        for out in outputs:
            out.append(text[step % len(text)])
        t0 = time.perf_counter()
        slots.apply(logits)
        times.append(1000 * (time.perf_counter() - t0))
    return {"guarded_rows": len(slots.slots), "rows": len(ids), "median_ms_per_step": statistics.median(times)}


def post(port: int, path: str, body: dict, stream: bool, timeout: float = 600) -> tuple[int, str, int]:
    """(HTTP status, text, number of stream chunks); a streamed reply must end with [DONE]."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    resp = conn.getresponse()
    if resp.status != 200 or not stream:
        data = resp.read().decode()
        conn.close()
        if resp.status != 200:
            return resp.status, data, 0
        obj = json.loads(data)
        choice = obj["choices"][0]
        return 200, choice.get("text") or choice.get("message", {}).get("content", ""), 1
    text, chunks, done = [], 0, False
    for raw in resp:
        line = raw.decode().strip()
        if not line.startswith("data:"):
            continue
        payload = line[5:].strip()
        if payload == "[DONE]":
            done = True
            break
        obj = json.loads(payload)
        chunks += 1
        for choice in obj.get("choices", []):
            text.append(choice.get("text") or (choice.get("delta") or {}).get("content") or "")
    conn.close()
    return (200 if done else 599), "".join(text), chunks


def load_test(model: str, policy: str, questions: list[str], n: int = 64) -> dict:
    from unlearnkit.guard.serve import free_port

    port = free_port()
    log = open(ROOT / "runs" / "bench" / "guard_server.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "unlearnkit.cli", "serve", "--model", model, "--guard", policy,
                               "--port", str(port), "--name", "m", "--dtype", "float32", "--max-model-len", "1024"],
                              cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        from unlearnkit.guard.serve import wait_for_server

        startup = wait_for_server(port, server)
        results: list = [None] * n

        def one(i: int):
            q = questions[i % len(questions)]
            body = {"model": "m", "max_tokens": 40, "temperature": 0, "stream": True}
            if i % 8 == 7:
                body["vllm_xargs"] = {"unlearn_targets": ["Paris", "London"], "unlearn_penalty": 8.0}
            t = time.time()
            if i % 2:
                status, text, chunks = post(port, "/v1/completions", {**body, "prompt": f"Question: {q}\nAnswer:"}, True)
            else:
                status, text, chunks = post(port, "/v1/chat/completions",
                                            {**body, "messages": [{"role": "user", "content": q}]}, True)
            results[i] = {"status": status, "chunks": chunks, "seconds": time.time() - t, "chars": len(text)}

        t1 = time.time()
        threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.time() - t1
        completed = sum(r is not None and r["status"] == 200 for r in results)
        bad = {}
        for name, xargs in {"loosen_threshold": {"unlearn_threshold": 0.99}, "switch_off": {"unlearn_guard": False},
                            "unknown_key": {"unlearn_disable": 1}, "wrong_type": {"unlearn_targets": {"a": 1}}}.items():
            status, text, _ = post(port, "/v1/chat/completions", {"model": "m", "max_tokens": 4, "vllm_xargs": xargs,
                                                                   "messages": [{"role": "user", "content": "hi"}]}, False)
            bad[name] = {"status": status, "message": text[:200]}
        status, text, _ = post(port, "/v1/completions", {"model": "m", "prompt": "The capital of France is",
                                                          "max_tokens": 8, "temperature": 0}, False)
        return {"requests": n, "completed": completed, "lost": n - completed, "wall_s": wall,
                "median_latency_s": statistics.median(r["seconds"] for r in results if r),
                "startup_s": startup, "bad_requests": bad, "serving_after_bad": status == 200}
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def without_quotes(policy: str) -> str:
    """A copy of a corpus policy served without its quote filter: everything else (classifier, names,
    items, penalty) the same, so a run on each isolates the filter's cost."""
    import shutil

    from unlearnkit.guard.policy import QUOTES_FILE

    src, dst = Path(policy), ROOT / "runs" / "bench" / (Path(policy).name + "-without-quotes")
    meta = json.loads((src / "policy.json").read_text())
    if QUOTES_FILE not in meta["files"]:
        sys.exit(f"--without-quotes: {policy} has no quote filter")
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(QUOTES_FILE))
    del meta["files"][QUOTES_FILE]
    meta.pop("quotes", None)
    (dst / "policy.json").write_text(json.dumps(meta, indent=1))
    return str(dst)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="run:configs/finetune/tofu_mini_target.yaml")
    parser.add_argument("--policy", default=str(ROOT / "runs" / "guard" / "forget01"))
    parser.add_argument("--retain-prompts", type=int, default=80)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="alternating plain/guarded runs (0: skip them)")
    parser.add_argument("--skip-server", action="store_true")
    parser.add_argument("--interleaved", action="store_true",
                        help="throughput only: a plain and a guarded engine kept alive, batches sent in turn")
    parser.add_argument("--same-length", action="store_true",
                        help="with --interleaved: every answer runs to --max-tokens (the guard's own cost)")
    parser.add_argument("--without-quotes", action="store_true",
                        help="serve a copy of the (corpus) policy without its quote filter")
    parser.add_argument("--worker", choices=["plain", "guarded"], help=argparse.SUPPRESS)
    parser.add_argument("--ids", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench" / "guard_bench.json"))
    args = parser.parse_args()
    if args.same_length and not (args.interleaved or args.worker):
        parser.error("--same-length needs --interleaved")
    if args.worker:
        return worker(args.worker, args.model, args.ids, args.max_tokens, args.same_length)
    os.environ.setdefault("UNLEARN_TOFU_DIR", str(ROOT.parent / "shared" / "data" / "tofu"))
    (ROOT / "runs" / "bench").mkdir(parents=True, exist_ok=True)

    from unlearnkit.models.loading import load_tokenizer
    from unlearnkit.training.cache import resolve_model   # run: references too

    path = resolve_model(args.model)
    if not (Path(args.policy) / "policy.json").is_file():
        unlearn("guard", "build", "--forget", "tofu/forget01_perturbed", "--retain", "tofu/retain90",
                "--model", path, "--out", args.policy)
    if args.without_quotes:
        args.policy = without_quotes(args.policy)
    tokenizer = load_tokenizer(path)
    questions, ids = prompts_for(tokenizer, args.retain_prompts)
    report = {"model": path, "policy": args.policy}
    if args.interleaved:
        report["throughput"] = tp = interleaved_throughput(path, args.policy, tokenizer, args.retain_prompts,
                                                           args.max_tokens, args.rounds, args.same_length)
        ci = tp["ratio_ci95"]
        print(f"guarded/plain throughput, interleaved: mean of {len(tp['pair_ratios'])} pairs {tp['ratio_mean']:.3f}"
              + (f", 95% CI [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "") + f", median {tp['ratio_median']:.3f}")
        share, ci = tp["guard_share_mean"], tp["guard_share_ci95"]
        print(f"the guard's own calls inside the guarded engine: {100 * share:.2f}% of its generate time"
              + (f", 95% CI [{100 * ci[0]:.2f}%, {100 * ci[1]:.2f}%]" if ci else "")
              + f" (a throughput ratio of {1 - share:.3f} from the guard's work alone)")
        Path(args.out).write_text(json.dumps(report, indent=1))
        print(f"results: {args.out}")
        return 0
    report["classification"] = cost = classification_cost(path, args.policy, ids)
    print(f"classification: single request median {cost['single_median_ms']:.2f} ms (p90 {cost['single_p90_ms']:.2f}; "
          f"by name {cost['named_median_ms']:.2f}, by embedding {cost['embedded_median_ms']:.2f}); "
          f"per request in batches of 16: {cost['batch16_per_request_median_ms']:.2f} ms", flush=True)
    report["decode_overhead"] = over = decode_overhead(path, args.policy, ids)
    print(f"guard work per decode step: {over['median_ms_per_step']:.2f} ms for {over['guarded_rows']} guarded rows "
          f"of {over['rows']}", flush=True)
    if args.rounds < 1:
        Path(args.out).write_text(json.dumps(report, indent=1))
        return 0
    tp = throughput(path, args.policy, ids, args.max_tokens, args.rounds)
    n_plain = len(ids)
    same = sum(a == b for a, b in zip(tp["outputs"]["plain"], tp["outputs"]["guarded"]))
    tp.pop("outputs")
    tp["identical_outputs"] = same
    report["throughput"] = tp
    ci = tp["ratio_ci95"]
    print(f"throughput: plain {tp['plain_tok_s']:.1f} tok/s, guarded {tp['guarded_tok_s']:.1f} tok/s, "
          f"ratio of medians {tp['ratio']:.3f}; paired ratios {[round(r, 3) for r in tp['pair_ratios']]}, mean "
          f"{tp['ratio_mean']:.3f}" + (f", 95% CI [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "") +
          f"; {same}/{n_plain} outputs identical", flush=True)
    if not args.skip_server:
        report["load_test"] = lt = load_test(path, args.policy, questions)
        print(f"load test: {lt['completed']}/{lt['requests']} streamed requests completed, {lt['lost']} lost, "
              f"{lt['wall_s']:.1f} s wall, median latency {lt['median_latency_s']:.1f} s; bad vllm_xargs -> "
              f"{ {k: v['status'] for k, v in lt['bad_requests'].items()} }; serving afterwards: {lt['serving_after_bad']}")
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
