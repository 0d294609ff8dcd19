"""A deletion request while the server runs: the served policy rebuilt in place, taken up without a restart
(guard/reload.py). Not a test: it prints figures.

    python benchmarks/guard_reload.py [--model run:configs/finetune/tofu_mini_target.yaml]
                                      [--forget tofu/forget01_perturbed] [--retain tofu/retain90]

1. Builds a policy from the forget set's first person only (request 1) into a fresh directory and starts
   `unlearn serve --guard DIR` on it.
2. Asks six of the second person's questions (plain chat, greedy): how many replies write their full name.
3. Rebuilds the policy over both people (request 2) into the same directory, the server still running;
   from the moment the rebuild is in place, asks the same questions again and again, timing each, until
   a round writes no name (or 120 s pass): seconds until the new person was withheld, and the latency of
   requests answered while the new policy loaded against those before.
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from guard_attack import start_server  # noqa: E402


def ask(port: int, question: str) -> tuple[str, float]:
    body = {"model": "target", "messages": [{"role": "user", "content": question}], "max_tokens": 48,
            "temperature": 0.0}
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    conn.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
    reply = json.loads(conn.getresponse().read())
    return reply["choices"][0]["message"]["content"] or "", time.perf_counter() - started


def letters(text: str) -> str:
    return re.sub(r"[^a-z]", "", text.lower())


def build(forget: list, retain: str, out: Path, model: str) -> float:
    from unlearnkit.data.sources import load_spec
    from unlearnkit.guard.build import build_policy
    from unlearnkit.guard.policy import GuardConfig
    from unlearnkit.models.loading import load_tokenizer
    from unlearnkit.training.cache import resolve_model

    path = resolve_model(model)
    started = time.time()
    build_policy(forget, out, path, load_tokenizer(path), GuardConfig(), retain=load_spec(retain),
                 progress=lambda *_: None)
    return time.time() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="run:configs/finetune/tofu_mini_target.yaml")
    parser.add_argument("--forget", default="tofu/forget01_perturbed")
    parser.add_argument("--retain", default="tofu/retain90")
    args = parser.parse_args()

    from unlearnkit.data.sources import load_spec
    from unlearnkit.evaluation.attacks import subjects
    from unlearnkit.guard.serve import free_port

    forget = load_spec(args.forget)
    who = subjects(forget)
    people = list(dict.fromkeys(p for p in who if p))
    if len(people) < 2:
        raise SystemExit(f"the forget set must be about two or more people (found {people or 'none'})")
    first, second = ([r for r, p in zip(forget, who) if p == person] for person in people[:2])
    name = people[1]
    # questions about the second person (a strict policy withholds the full name even where the question wrote it)
    questions = [r.question for r in second][:6]
    work = Path(tempfile.mkdtemp(prefix="guard-reload-"))
    served = work / "policy"
    out: dict = {"build_one_s": round(build(first, args.retain, served, args.model), 1), "new_person": name}
    port = free_port()
    server = start_server(args.model, str(served), False, port, work / "server.log")
    try:
        before = [ask(port, q) for q in questions]
        out["before"] = {"named": sum(letters(name) in letters(t) for t, _ in before),
                         "latency_p50_s": round(statistics.median(s for _, s in before), 3)}
        out["build_both_s"] = round(build(first + second, args.retain, served, args.model), 1)
        placed, rounds = time.time(), []
        while time.time() - placed < 120:
            got = [ask(port, q) for q in questions]
            rounds.append({"at_s": round(time.time() - placed, 2), "named": sum(letters(name) in letters(t) for t, _ in got),
                           "latency_p50_s": round(statistics.median(s for _, s in got), 3)})
            if rounds[-1]["named"] == 0 and len(rounds) > 1:
                break
        out["after"] = rounds
        out["withheld_after_s"] = next((r["at_s"] for r in rounds if r["named"] == 0), None)
    finally:
        server.terminate()
        server.wait(60)
    log = (work / "server.log").read_text(errors="replace")
    out["server_log_reloaded"] = "reloaded" in log
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
