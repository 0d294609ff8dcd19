"""The ALU-style rewriter as a LangGraph graph.

    answer -> audit --clean--> finish                      (the draft reveals nothing: sent as is)
                    --leaks--> erase -> critic -> compose --ok--> END   (the best j of k rewrites)
                                                          --low--> refuse
    any node whose model call fails (after retries) -> refuse

audit/erase/critic see only the `top_facts` forget facts retrieved for this question and draft,
so their prompts stay the same size whatever the number of targets. A draft or rewrite that names
a target is a leak whatever the model says (lexical check), and the composed answer is checked
once more before it leaves: no route can emit a target's name.

Every failure has a fallback, is logged and counted in `Pipeline.stats`: an unreachable endpoint
or an error reply (retry, then refusal), a malformed audit verdict (retry, then treated as a
leak), a malformed critic score (retry, then scored 1), an empty rewrite (retry, then refusal).

Each run carries a `Job`: the names a guarded engine is sent with every model call (so its token
filter enforces the front's live targets too), and a cancellation flag the front sets when the
client leaves: no model call starts after it (the run ends with route "abandoned").
"""

from __future__ import annotations

import logging
import operator
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Annotated, Callable, Optional, Sequence, TypedDict

from ..guard.phrases import mentions
from .config import LOCAL_NODES, NODES, AgentConfig
from .llm import ChatModel, LLMError
from .nodes import (choose, clean_rewrite, format_facts, format_variants, last_user_message, parse_score,
                    parse_verdict)
from .store import Fact, LiveTarget, TargetStore, live_fact

log = logging.getLogger("unlearnkit.agents")


class Abandoned(Exception):
    """The client went away: the rewrite stops before its next model call."""


@dataclass(frozen=True)
class Job:
    """What one rewrite's model calls carry: `targets`, names a guarded endpoint must forbid too (the
    request's own and the live targets, front.py), whether the client is still waiting, and when
    a call may start (the front lets passthrough requests go first)."""

    targets: tuple[str, ...] = ()
    cancelled: threading.Event = field(default_factory=threading.Event)
    turn: Callable[[], None] = lambda: None     # blocks until the call may start (lanes.py)

    def cancel(self) -> None:
        self.cancelled.set()

    def check(self) -> None:
        if self.cancelled.is_set():
            raise Abandoned()

    def start(self) -> None:
        """Before each model call: wait for its turn, then stop if the client left meanwhile."""
        self.check()
        self.turn()
        self.check()


class State(TypedDict, total=False):
    job: Job
    messages: list[dict]
    question: str
    extra: list[Fact]           # targets the request itself added (unlearn_targets)
    facts: list[Fact]
    draft: str
    leak: bool
    variants: list[str]
    scores: list[Optional[int]]
    answer: str
    route: str                  # clean | rewritten | refused
    reason: str
    failed: str                 # set by a node that could not do its job: the graph refuses
    calls: Annotated[int, operator.add]
    prompt_tokens: Annotated[int, operator.add]
    completion_tokens: Annotated[int, operator.add]
    events: Annotated[list[str], operator.add]
    node_tokens: Annotated[list[tuple[str, int]], operator.add]   # (node, prompt tokens) per call


@dataclass
class Result:
    answer: str
    route: str
    reason: str
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    events: list[str] = field(default_factory=list)
    scores: list[Optional[int]] = field(default_factory=list)
    seconds: float = 0.0
    node_tokens: list[tuple[str, int]] = field(default_factory=list)

    def prompt_tokens_by_node(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for node, tokens in self.node_tokens:
            out.setdefault(node, []).append(tokens)
        return out

    def metadata(self) -> dict:
        """What an operator's diagnostics show: the route and the cost (no target names: events never
        carry them). The graph's reason and the critic's scores stay in the server log."""
        return {"route": self.route, "llm_calls": self.calls, "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens, "fallbacks": self.events,
                "seconds": round(self.seconds, 3)}


@dataclass
class _Call:
    texts: Optional[list[str]]
    ok: bool
    usage: dict
    events: list[str]


def _no_usage() -> dict:
    return {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0, "node_tokens": []}


def _combined(calls: Sequence[_Call]) -> dict:
    """Several calls' usage and events as one state update (the State adds them up across nodes)."""
    out = {**_no_usage(), "events": []}
    for call in calls:
        for key, value in call.usage.items():
            out[key] += value
        out["events"] += call.events
    return out


class Pipeline:
    """The graph plus its models, config and counters; `run(messages)` rewrites one request."""

    def __init__(self, cfg: AgentConfig, store: TargetStore, models: ChatModel | dict[str, ChatModel]):
        self.cfg = cfg
        self.store = store
        self.models = models if isinstance(models, dict) else {n: models for n in NODES}
        missing = [n for n in NODES if n not in self.models]
        if missing:
            raise ValueError(f"no model for node(s) {missing}")
        self.stats: Counter = Counter()
        self._lock = threading.Lock()
        self.graph = self._build()

    # ------------------------------------------------------------------ plumbing
    def count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.stats[key] += n

    def _call(self, node: str, messages: list[dict], job: Job, *, n: int = 1, temperature: float = 0.0,
              check: Callable[[list[str]], Optional[str]] = lambda texts: None,
              choices: Optional[Sequence[str]] = None) -> _Call:
        """One model call with retries. `check(texts)` names what is wrong with a reply (None: fine).
        Raises Abandoned instead of starting a call once the job is cancelled."""
        usage = _no_usage()
        events: list[str] = []
        texts = None
        for attempt in range(self.cfg.retries + 1):
            job.check()
            if attempt:
                self.count("retries")
                time.sleep(self.cfg.retry_backoff * 2 ** (attempt - 1))
            job.start()
            usage["calls"] += 1
            self.count("llm_calls")
            try:
                reply = self.models[node].chat(messages, n=n, max_tokens=self.cfg.max_tokens,
                                               temperature=temperature, seed=attempt if temperature else None,
                                               choices=choices, **self._engine_args(node, job))
            except LLMError as exc:
                self.count("llm_errors")
                events.append(f"{node}: model call failed")
                log.warning("agents: %s call failed (attempt %d/%d): %s", node, attempt + 1, self.cfg.retries + 1, exc)
                texts = None
                continue
            usage["prompt_tokens"] += reply.prompt_tokens
            usage["completion_tokens"] += reply.completion_tokens
            usage["node_tokens"].append((node, reply.prompt_tokens))
            self.count("prompt_tokens", reply.prompt_tokens)
            texts = reply.texts
            problem = check(texts)
            if problem is None:
                return _Call(texts, True, usage, events)
            events.append(f"{node}: {problem}")
            log.warning("agents: %s gave %s (attempt %d/%d)", node, problem, attempt + 1, self.cfg.retries + 1)
        return _Call(texts, False, usage, events)

    def _engine_args(self, node: str, job: Job) -> dict:
        """`targets=` for a model whose endpoint is the guarded engine (`guarded`), nothing otherwise."""
        return {"targets": job.targets} if job.targets and getattr(self.models[node], "guarded", False) else {}

    @staticmethod
    def _update(call: _Call, **values) -> dict:
        return {**values, **call.usage, "events": call.events}

    def _prompt(self, name: str, **fields) -> list[dict]:
        return [{"role": "user", "content": getattr(self.cfg.prompts, name).format(**fields)}]

    # ------------------------------------------------------------------ nodes
    def answer(self, state: State) -> dict:
        messages = list(state["messages"])
        if self.cfg.prompts.answer_system and not any(m.get("role") == "system" for m in messages):
            messages = [{"role": "system", "content": self.cfg.prompts.answer_system}] + messages
        call = self._call("answer", messages, state["job"],
                          check=lambda t: None if t and t[0].strip() else "an empty answer")
        if call.texts is None:
            self.count("endpoint_failures")
            return self._update(call, failed="the model endpoint is unreachable")
        return self._update(call, draft=(call.texts[0] or "").strip())

    def audit(self, state: State) -> dict:
        draft = state.get("draft", "")
        extra = list(state.get("extra", []))
        facts = self._prompt_facts(extra, state["question"], draft)
        if self.store.names_in(draft, extra + facts):
            self.count("audit_lexical")
            return {"facts": facts, "leak": True, "reason": "the draft names a forget target"}
        if not draft:
            return {"facts": facts, "leak": False, "reason": "empty draft"}
        prompt = self._prompt("audit", facts=format_facts(facts), question=state["question"], draft=draft)
        call = self._call("audit", prompt, state["job"],
                          check=lambda t: None if parse_verdict(t[0]) is not None else "a malformed verdict",
                          choices=("YES", "NO"))
        if not call.ok:
            self.count("malformed_verdicts" if call.texts is not None else "endpoint_failures")
            if call.texts is None:
                return self._update(call, facts=facts, failed="the model endpoint is unreachable")
            return self._update(call, facts=facts, leak=True, reason="audit verdict unreadable: treated as a leak")
        leak = bool(parse_verdict(call.texts[0]))
        return self._update(call, facts=facts, leak=leak,
                            reason="the auditor found forget information" if leak else "the auditor found none")

    def _prompt_facts(self, extra: list[Fact], question: str, draft: str) -> list[Fact]:
        """The facts the audit/erase/critic prompts show: the request's own targets that the question
        or draft names, then the policy's and live targets' nearest facts, then the request's other
        targets; `top_facts` of them unless more request targets are named. Every request target is
        still checked on the draft lexically (audit), so a client sending 64 names cannot make every
        prompt 64 facts long (engine time the other clients would wait for)."""
        text = f"{question}\n{draft}"
        named = [f for f in extra if mentions(text, [*f.names, *f.phrases])]
        rest = [f for f in extra if f not in named]
        retrieved = self.store.retrieve([question, draft], self.cfg.top_facts)
        return (named + retrieved + rest)[:max(self.cfg.top_facts, len(named))]

    def finish(self, state: State) -> dict:
        self.count("route_clean")
        return {"answer": state.get("draft", ""), "route": "clean"}

    def erase(self, state: State) -> dict:
        facts, k = state["facts"], self.cfg.k
        prompt = self._prompt("erase", facts=format_facts(facts), question=state["question"], draft=state["draft"])
        variants: list[str] = []
        calls: list[_Call] = []
        unreachable = False
        for attempt in range(self.cfg.retries + 1):
            need = k - len(variants)
            call = self._call("erase", prompt, state["job"], n=need, temperature=self.cfg.temperature)
            calls.append(call)
            if call.texts is None:
                unreachable = True
                break
            got = [clean_rewrite(t) for t in call.texts]
            empty = sum(not g for g in got)
            if empty:
                self.count("empty_rewrites", empty)
                call.events.append(f"erase: {empty} empty rewrite(s)")
            variants += [g for g in got if g][:need]
            if len(variants) >= k:
                break
            if attempt < self.cfg.retries:
                self.count("retries")
        out = {**_combined(calls), "variants": variants}
        if not variants:
            self.count("endpoint_failures" if unreachable else "empty_rewrite_refusals")
            out["failed"] = ("the model endpoint is unreachable" if unreachable
                             else "every rewrite was empty")
        return out

    def critic(self, state: State) -> dict:
        facts, variants = state["facts"], state["variants"]

        def score(variant: str) -> tuple[Optional[int], _Call | None]:
            if self.store.names_in(variant, facts):   # names a target: the worst score, no call needed
                return 1, None
            call = self._call("critic", self._prompt("critic", facts=format_facts(facts), variant=variant),
                              state["job"], check=lambda t: None if parse_score(t[0]) is not None else "a malformed score",
                              choices=("1", "2", "3", "4", "5"))
            if not call.ok:
                self.count("malformed_scores" if call.texts is not None else "endpoint_failures")
                return None, call
            return parse_score(call.texts[0]), call

        with ThreadPoolExecutor(max_workers=max(1, len(variants))) as pool:   # the server batches them
            results = list(pool.map(score, variants))
        return {**_combined([call for _, call in results if call is not None]), "scores": [s for s, _ in results]}

    def compose(self, state: State) -> dict:
        variants, facts = state["variants"], state["facts"]
        chosen, avg, refuse = choose(state["scores"], self.cfg.j, self.cfg.threshold)
        if refuse:
            return {"failed": f"mean critic score of the best {len(chosen)} rewrites {avg:.2f} < {self.cfg.threshold}"}
        best = [variants[i] for i in chosen]
        out: dict = {"answer": best[0], "route": "rewritten", "reason": f"{state.get('reason', '')}; "
                     f"composed {len(best)} of {len(variants)} rewrites (mean score {avg:.2f})"}
        if len(best) > 1:
            call = self._call("compose", self._prompt("compose", question=state["question"],
                                                      variants=format_variants(best)), state["job"],
                              check=lambda t: None if t and clean_rewrite(t[0]) else "an empty merge")
            out.update(call.usage, events=call.events)
            if call.ok:
                out["answer"] = clean_rewrite(call.texts[0])
            else:
                self.count("compose_fallbacks")
                out["events"] = call.events + ["compose: used the best rewrite"]
        if self.store.names_in(out["answer"], facts):
            clean = [v for v in best if not self.store.names_in(v, facts)]
            if not clean:
                self.count("final_check_refusals")
                return {**{k: v for k, v in out.items() if k not in ("answer", "route", "reason")},
                        "failed": "the composed answer still names a forget target"}
            out["answer"] = clean[0]
        self.count("route_rewritten")
        return out

    def refuse(self, state: State) -> dict:
        self.count("route_refused")
        return {"answer": self.cfg.refusal, "route": "refused", "reason": state.get("failed", "refused")}

    # ------------------------------------------------------------------ graph
    def _build(self):
        from langgraph.graph import END, START, StateGraph

        g = StateGraph(State)
        for name in (*NODES, *LOCAL_NODES):
            g.add_node(name, getattr(self, name))
        failed_or = lambda nxt: (lambda s: "refuse" if s.get("failed") else nxt)  # noqa: E731
        g.add_edge(START, "answer")
        g.add_conditional_edges("answer", failed_or("audit"), ["refuse", "audit"])
        g.add_conditional_edges("audit", lambda s: "refuse" if s.get("failed") else ("erase" if s.get("leak") else "finish"),
                                ["refuse", "erase", "finish"])
        g.add_conditional_edges("erase", failed_or("critic"), ["refuse", "critic"])
        g.add_edge("critic", "compose")
        g.add_conditional_edges("compose", failed_or(END), ["refuse", END])
        g.add_edge("finish", END)
        g.add_edge("refuse", END)
        return g.compile()

    def run(self, messages: Sequence[dict], extra_targets: Sequence[str] = (), job: Optional[Job] = None) -> Result:
        """Rewrite one request. `extra_targets`: names the request itself asked to forget; `job`: what
        its model calls carry, and its cancellation (front.py)."""
        started = time.perf_counter()
        self.count("requests")
        job = job or Job()
        extra = [live_fact(LiveTarget(name), 2.0) for name in extra_targets]
        try:
            job.check()   # queued behind other rewrites while its client left
            state = self.graph.invoke({"job": job, "messages": list(messages), "question": last_user_message(messages),
                                       "extra": extra, **_no_usage(), "events": []})
        except Abandoned:
            self.count("abandoned")
            log.info("agents: the client left; the rewrite stopped before its next model call")
            return Result(self.cfg.refusal, "abandoned", "the client disconnected", seconds=time.perf_counter() - started)
        except Exception:   # a bug or an unexpected reply shape: never crash the request, refuse it
            log.exception("agents: the rewriter failed; refusing the request")
            self.count("pipeline_errors")
            self.count("route_refused")
            return Result(self.cfg.refusal, "refused", "internal error in the rewriter",
                          seconds=time.perf_counter() - started)
        answer = state.get("answer", "")
        if state.get("route") == "clean" and self.store.names_in(answer, state.get("facts", [])):
            self.count("final_check_refusals")     # unreachable by construction (audit checks); kept as the last line
            return Result(self.cfg.refusal, "refused", "the answer names a forget target", seconds=time.perf_counter() - started)
        return Result(answer, state.get("route", "refused"), state.get("reason", ""), state.get("calls", 0),
                      state.get("prompt_tokens", 0), state.get("completion_tokens", 0), state.get("events", []),
                      state.get("scores", []), time.perf_counter() - started, state.get("node_tokens", []))
