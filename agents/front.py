"""`unlearn serve --agents`: an OpenAI-compatible front before the (guarded) vLLM server.

Per chat (or completion) request, in this order:
  1. guard/boundary.py's rules, the ones the guarded vLLM server enforces too: body size (413),
     JSON depth, endpoint, field allow-list and per-field rules, channels (prompt log-probabilities,
     beam search, prompt embeddings: 400), `unlearn_*` keys of `vllm_xargs` (tighten only);
  2. the front's own (request.py): all the engine would render must be readable text (image, audio,
     file parts: 400), `stream` a boolean, one choice and no log-probabilities (a rewrite has
     neither several choices nor log-probabilities);
  3. the classifier, once, over all that text (every role, tool calls and definitions, documents,
     template arguments, the prefill), on its own small thread pool, then:
  - not flagged: the request goes to the backend and its answer comes back in the front's reply
    shape (reply.py), streamed or not; an error of the backend's comes back as it came;
  - flagged: the backend checks the request's own body first (a 4xx it would give a relayed
    request is given here too), then the agent graph answers it (`graph.Pipeline`). At most
    `max_rewrites` rewrites run at once and `rewrite_queue` wait; past that, and while the shared
    live targets cannot be read, a flagged request is answered with the policy's refusal.
Every malformed request is a 4xx naming the field, never a 500.

What a client reads back does not depend on the path: the same reply shape, `finish_reason` rule,
usage counting and stream events (reply.py), no status a relayed request would not get. Why a
request was routed is for operators: the log, GET /admin/stats, and for requests that carry the
admin token the `x-unlearn-path` / `x-unlearn-reason` / `x-unlearn-route` headers and the `unlearn`
object. What stays observable is time: a rewrite takes the graph's model calls longer than a relay.

With a guarded backend, the live targets (which only the front knows) go to the engine with every
request, relayed or the graph's own model calls, in `vllm_xargs.unlearn_targets`, so its token
filter enforces them too (`engine_targets` says what the engine's 64-target limit implies).

GET /health is 503 when the backend is down (its process ended, or its /health does not answer),
and 503 with status "degraded" when the shared live targets file cannot be read (store.py): such a
replica answers flagged requests with the refusal instead of rewriting them against targets that
may be stale, until the file reads again; unflagged requests still pass (the targets in force stay).

POST /v1/unlearn/verdict (for gateways: LiteLLM, NeMo Guardrails, any OpenAI proxy; authenticated
like the admin API): the body is an OpenAI chat (`messages`) or completions (`prompt`) request,
checked by the same rules; the answer is the classifier's decision, never a target name, score or
threshold: {"flagged": bool, "category": "policy" | "live" | "request" | null, "path": "passthrough"
| "agents"}, where "request" means the request's own `unlearn_*` arguments flagged it.

Admin (only with a token: $UNLEARN_ADMIN_TOKEN; `Authorization: Bearer <token>`):
    GET /admin/targets             policy targets (fixed) and live targets
    POST /admin/targets            {"name": str, "facts": [str]}: add a live target (next request)
    DELETE /admin/targets/{name}   remove a live target
    GET /admin/stats               counters: paths, routes, retries, fallbacks, errors
"""


import asyncio
import hmac
import logging
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import httpx

from ..guard import boundary
from ..guard.boundary import Rejection
from ..guard.runtime import PREFIX
from .graph import Job, Pipeline, Result
from .http import backend_unreachable, completion_url, error_response, health_url, read_bounded, root_url
from .lanes import Lanes
from .reply import Answer, Reply, Usage, WordChunker, answer_chunks, backend_answers, choice_text, sse_events
from .request import BadRequest, FrontRequest, read_request
from .routes import add_admin_routes, add_health_route, add_openai_routes, add_verdict_route
from .store import TargetStore

log = logging.getLogger("unlearnkit.agents")

MAX_ENGINE_TARGETS = 64          # guard/runtime.parse_request_args refuses more unlearn_targets
BACKEND_HEALTH_TIMEOUT = 2.0     # seconds for the backend's /health
CLASSIFY_WORKERS = 4


@dataclass(frozen=True)
class Verdict:
    """The classifier's decision, as the front acts on it."""

    flagged: bool
    reason: str                        # for the client: not flagged | flagged | tightened by request
    engine_targets: tuple[str, ...]    # names a guarded engine is sent (the request's own, then live ones)
    failed: bool = False               # the classifier raised: flagged (fail closed)
    category: Optional[str] = None     # what flagged it: policy | live | request (the verdict endpoint's)
    degraded: bool = False             # the shared live targets file could not be read (store.py)


def client_reason(flagged: bool, tightened: bool) -> str:
    """What a client is told: the path's cause, never a number or whether a target was named."""
    if not flagged:
        return "not flagged"
    return "tightened by request" if tightened else "flagged"


def merge_targets(requested: Sequence[str], live: Sequence[str], limit: int = MAX_ENGINE_TARGETS) -> tuple[str, ...]:
    """The server's live targets first, then the request's own while they fit (a client cannot push
    the server's targets out of the engine's filter by sending 64 of its own); case-insensitive
    repeats dropped."""
    out: dict[str, str] = {}
    for name in list(live) + list(requested):
        out.setdefault(name.lower(), name)
    return tuple(out.values())[:limit]


def engine_targets(store: TargetStore, ask: FrontRequest, texts: Sequence[str]) -> tuple[str, ...]:
    """What a guarded engine is sent in `vllm_xargs.unlearn_targets`: the live targets, then the
    request's own. The engine takes at most 64 per request, so with more live targets than fit, the
    ones this prompt names come first, then the nearest to it. What that limit implies: the rest are
    enforced by the front alone for this request; a prompt about any of them is flagged and rewritten
    (and no rewrite leaves that names a live target), but an unflagged answer drifting to one of
    them is not token-filtered by the engine."""
    room = MAX_ENGINE_TARGETS
    try:
        live = store.live_names_for(texts, room)
    except Exception:   # ranking needs the embedder; without it, the first ones in order
        log.exception("agent front: ranking live targets failed; sending the first %d", room)
        live = [t.name for t in store.live_targets()][:room]
    return merge_targets(ask.args.targets, live)


def forwarded_body(body: dict, targets: Sequence[str], guarded: bool) -> dict:
    """The body relayed to the backend: a guarded one gets the engine targets in `vllm_xargs`; an
    unguarded one (`--agents-only`) would refuse `unlearn_*` keys, which are dropped."""
    xargs = body.get("vllm_xargs") or {}
    if guarded and targets:
        return {**body, "vllm_xargs": {**xargs, "unlearn_targets": list(targets)}}
    if not guarded and any(k.startswith(PREFIX) for k in xargs):
        return {**body, "vllm_xargs": {k: v for k, v in xargs.items() if not k.startswith(PREFIX)}}
    return body


def prompt_of(ask: FrontRequest) -> dict:
    """The request's prompt as the backend's /tokenize takes it."""
    if ask.kind == "chat":
        return {"messages": ask.prompt.messages}
    return {"prompt": ask.prompt.messages[0]["content"]}


@dataclass(frozen=True)
class PromptLength:
    tokens: int
    context: int          # the backend's max_model_len (0: not reported)

    @property
    def over(self) -> bool:
        return 0 < self.context < self.tokens


def refusal_result(refusal: str, why: str) -> Result:
    """The graph's result for a flagged request it did not run (every place taken, stale targets)."""
    return Result(refusal, "refused", why)


@dataclass(frozen=True)
class Diagnostics:
    """Why a request took its path, for operators only: requests carrying the admin token get it as
    `x-unlearn-*` headers and an `unlearn` object; every other client gets nothing of it."""

    verdict: Verdict
    shown: bool
    route: Optional[str] = None
    metadata: Optional[dict] = None

    def with_result(self, result: Result) -> "Diagnostics":
        return Diagnostics(self.verdict, self.shown, result.route, result.metadata())

    def path(self) -> str:
        return "agents" if self.verdict.flagged else "passthrough"

    def headers(self) -> Optional[dict]:
        if not self.shown:
            return None
        out = {"x-unlearn-path": self.path(), "x-unlearn-reason": self.verdict.reason}
        return {**out, "x-unlearn-route": self.route} if self.route else out

    def body(self, data: dict) -> dict:
        if not self.shown:
            return data
        return {**data, "unlearn": {"path": self.path(), "reason": self.verdict.reason, **(self.metadata or {})}}


class RewriteSlots:
    """At most `running` rewrites at once (a thread pool of that size; the graph holds a thread for
    its seconds of model calls) and `queued` more waiting; beyond that `submit` turns them away. A
    place is freed when its run ends, not when its client leaves: an abandoned rewrite keeps it
    until its current model call returns (the job's cancellation stops it there)."""

    def __init__(self, running: int, queued: int):
        self.pool = ThreadPoolExecutor(running, thread_name_prefix="unlearn-rewrite")
        self.capacity = running + queued
        self.admitted = 0
        self._lock = threading.Lock()

    def submit(self, fn: Callable, *args) -> Optional[asyncio.Future]:
        """`fn(*args)` on the pool, as an awaitable; None when every place is taken."""
        with self._lock:
            if self.admitted >= self.capacity:
                return None
            self.admitted += 1
        try:
            future = self.pool.submit(fn, *args)
        except RuntimeError:   # shutting down
            self._leave(None)
            return None
        future.add_done_callback(self._leave)
        return asyncio.wrap_future(future)

    def _leave(self, _future) -> None:
        with self._lock:
            self.admitted -= 1


async def cancel_when_gone(request, job: Job) -> None:
    """Cancel `job` once the client disconnects (the body is read: what comes next is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        await asyncio.sleep(0.05)
    job.cancel()


async def await_rewrite(request, future: asyncio.Future, job: Job):
    """The rewrite's result; if the client disconnects first, its job is cancelled (no model call
    starts after that, and a queued one never starts its graph)."""
    watcher = asyncio.create_task(cancel_when_gone(request, job))
    try:
        return await future
    except asyncio.CancelledError:
        job.cancel()
        raise
    finally:
        watcher.cancel()


@dataclass
class Front:
    """What the front's endpoints share: the targets, the rewriter, the backend and its client, the
    thread pools and the counters (GET /admin/stats)."""

    store: TargetStore
    pipeline: Pipeline
    backend: str                       # the backend's OpenAI base URL (".../v1/")
    model_name: str
    backend_guarded: bool
    admin_token: Optional[str]
    timeout: float
    backend_alive: Optional[Callable[[], bool]]
    classify_pool: ThreadPoolExecutor
    slots: RewriteSlots
    lanes: Lanes
    meta: dict                         # the same policy the guarded engine checks `unlearn_*` against
    counters: Counter = field(default_factory=Counter)
    client: Optional[httpx.AsyncClient] = None   # opened by `lifespan`

    @asynccontextmanager
    async def lifespan(self, _app):
        """The backend's client while the app runs; the pools shut down after it."""
        self.client = httpx.AsyncClient(base_url=self.backend, timeout=self.timeout)
        yield
        await self.client.aclose()
        self.classify_pool.shutdown(wait=False, cancel_futures=True)
        self.slots.pool.shutdown(wait=False, cancel_futures=True)

    def refuse(self, rejection: Rejection):
        from fastapi.responses import JSONResponse

        self.counters["bad_requests"] += 1
        return JSONResponse(rejection.body(), status_code=rejection.status)

    def unavailable(self):
        self.counters["store_refusals"] += 1
        return error_response(503, "this replica cannot read the shared live targets store; retry shortly (another "
                              "replica may answer)", "service_unavailable", {"retry-after": "5"})

    def authorised(self, request):
        """None when the request carries the admin token; else the 403 (no token set) or 401."""
        if not self.admin_token:
            return error_response(403, "the admin endpoint is disabled: start the server with $UNLEARN_ADMIN_TOKEN set",
                                  "permission_error")
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {self.admin_token}".encode()):
            self.counters["admin_denied"] += 1
            return error_response(401, "missing or wrong admin token (Authorization: Bearer <token>)",
                                  "authentication_error")
        return None

    def checked(self, kind: str, path: str, raw: bytes) -> tuple[Optional[FrontRequest], Optional[Rejection]]:
        """boundary.py's rules (the guarded engine's), then the front's own (request.py)."""
        body, rejection = boundary.check("POST", path, raw, self.meta)
        if rejection is not None:
            return None, rejection
        try:
            return read_request(kind, body, self.meta), None
        except BadRequest as exc:
            return None, Rejection(400, exc.field, str(exc))

    def classify(self, ask: FrontRequest) -> Verdict:
        """On the classification pool: a flood of rewrites (their own pool) cannot starve it."""
        store = self.store
        whole, views = ask.prompt.whole, ask.prompt.views()
        failed, category = False, None
        try:
            store.refresh()   # a changed live-targets file is re-read (and embedded) here, off the event loop
            for segments in views:   # the user messages, then everything rendered
                decision, category = store.classify_source(whole, segments, ask.args.threshold, ask.args.targets)
                if decision.flagged:
                    break
            flagged = decision.flagged or ask.args.force
            if flagged and category is None:
                category = "request"   # unlearn_guard: true
            log.debug("agent front: %s (%s)", "flagged" if flagged else "not flagged", decision.reason)
        except Exception:   # fail closed: an unclassifiable request goes through the rewriter
            log.exception("agent front: classification failed; routing the request to the rewriter")
            flagged = failed = True
        targets = engine_targets(store, ask, [views[0][-1], whole]) if self.backend_guarded else ()
        return Verdict(flagged, client_reason(flagged, ask.tightened), targets, failed,
                       None if failed else category, store.degraded is not None)

    async def classified(self, ask: FrontRequest) -> Verdict:
        """`classify(ask)`, run on the classification pool."""
        return await asyncio.get_running_loop().run_in_executor(self.classify_pool, self.classify, ask)

    async def handle(self, request, kind: str):
        """A chat or completions request: checked, classified, then relayed or rewritten; written back
        the same way whichever path answers (reply.py)."""
        ask, rejection = self.checked(kind, request.url.path, await read_bounded(request))
        if rejection is not None:
            return self.refuse(rejection)
        length = await self.prompt_length(ask)
        if length is not None and length.over and "truncate_prompt_tokens" not in ask.body:
            # past the model's context: the backend refuses it, whatever it says; not classified
            self.counters["over_context"] += 1
            live = [t.name for t in self.store.live_targets()][:MAX_ENGINE_TARGETS]
            verdict = Verdict(False, "not flagged", merge_targets(ask.args.targets, live) if self.backend_guarded else ())
        else:
            verdict = await self.classified(ask)
        if verdict.failed:
            self.counters["classifier_errors"] += 1
        reply = Reply.for_request(ask.kind, ask.body, self.model_name)
        diagnostics = Diagnostics(verdict, self.authorised(request) is None)
        if not verdict.flagged:
            self.counters["passthrough"] += 1
            return await self.passthrough(ask, verdict, reply, diagnostics)
        self.counters["agents"] += 1
        invalid = await self.backend_refuses(ask, verdict)   # the backend's own 4xx, as a relayed request gets it
        if invalid is not None:
            return invalid
        return await self.rewrite(request, ask, verdict, reply, diagnostics, length)

    async def passthrough(self, ask: FrontRequest, verdict: Verdict, reply: Reply, diagnostics: "Diagnostics"):
        """Relay an unflagged request to the backend; its answer comes back in the front's reply shape
        (an error of the backend's as it came)."""
        from fastapi.responses import JSONResponse, Response, StreamingResponse

        body = forwarded_body(ask.body, verdict.engine_targets, self.backend_guarded)
        if ask.stream:   # usage comes with the last event; the client gets it only if it asked
            body = {**body, "stream_options": {"include_usage": True}}
        client = self.client
        self.lanes.enter()   # rewrites' model calls wait while this runs (lanes.py)
        streaming = False
        try:
            if ask.stream:
                upstream = await client.send(client.build_request("POST", completion_url(ask.kind), json=body),
                                             stream=True)
                if upstream.status_code == 200:
                    streaming = True
                    return StreamingResponse(self.relayed_events(upstream, reply), media_type="text/event-stream",
                                             headers=diagnostics.headers())
                await upstream.aread()
            else:
                upstream = await client.post(completion_url(ask.kind), json=body)
        except httpx.HTTPError as exc:
            self.counters["backend_errors"] += 1
            log.error("agent front: backend %s unreachable: %s", self.backend, exc)
            return backend_unreachable(exc)
        finally:
            if not streaming:
                self.lanes.leave()
        try:
            data = upstream.json()
        except ValueError:
            data = None
        if upstream.status_code != 200 or not isinstance(data, dict):
            return Response(upstream.content, status_code=upstream.status_code,
                            media_type=upstream.headers.get("content-type"))
        return JSONResponse(diagnostics.body(reply.completion(backend_answers(data, ask.kind),
                                                              Usage.from_backend(data.get("usage")))),
                            headers=diagnostics.headers())

    async def relayed_events(self, upstream, reply: Reply):
        """The backend's stream in the front's event shape and word chunks (those of a rewrite)."""
        chunker, finish, usage = WordChunker(), "stop", None
        try:
            yield reply.opening()
            async for data in sse_events(upstream):
                usage = Usage.from_backend(data.get("usage")) or usage
                for choice in data.get("choices") or []:
                    if isinstance(choice, dict):
                        finish = "length" if choice.get("finish_reason") == "length" else finish
                        for text in chunker.feed(choice_text(choice, reply.kind)):
                            yield reply.event([reply.piece(text)])
            for text in chunker.rest():
                yield reply.event([reply.piece(text)])
            yield reply.closing(finish, usage)
        finally:
            await upstream.aclose()
            self.lanes.leave()

    async def backend_refuses(self, ask: FrontRequest, verdict: Verdict):
        """The backend's answer to a flagged request's own body when it refuses it (a 4xx a relayed
        request would get: a prompt past the context, a sampling value out of range), else None. The
        request is streamed and dropped after the status: the backend checks it before generating."""
        from fastapi.responses import Response

        body = {k: v for k, v in forwarded_body(ask.body, verdict.engine_targets, self.backend_guarded).items()
                if k != "stream_options"}
        client = self.client
        try:
            upstream = await client.send(client.build_request("POST", completion_url(ask.kind),
                                                              json={**body, "stream": True}), stream=True)
        except httpx.HTTPError as exc:
            self.counters["backend_errors"] += 1
            return backend_unreachable(exc)
        try:
            if upstream.status_code == 200:
                return None
            content = await upstream.aread()
            return Response(content, status_code=upstream.status_code, media_type=upstream.headers.get("content-type"))
        finally:
            await upstream.aclose()

    async def rewrite(self, request, ask: FrontRequest, verdict: Verdict, reply: Reply, diagnostics: "Diagnostics",
                      length: Optional["PromptLength"] = None):
        """Answer a flagged request with the agent graph (whole or streamed). When every rewrite place
        is taken, or the live targets cannot be read, the answer is the policy's refusal. `length`: the
        prompt's, as measured at admission (its usage)."""
        from fastapi.responses import JSONResponse, StreamingResponse

        job = Job(verdict.engine_targets, turn=self.lanes.rewrite_turn)
        future = None if verdict.degraded else self.slots.submit(self.pipeline.run, ask.prompt.messages,
                                                                   ask.args.targets, job)
        if future is None:
            self.counters["store_refusals" if verdict.degraded else "rewrites_busy"] += 1
            future = asyncio.get_running_loop().create_future()
            future.set_result(refusal_result(self.pipeline.cfg.refusal, "degraded" if verdict.degraded else "busy"))
        if ask.stream:
            return StreamingResponse(self.rewrite_events(request, ask, reply, future, job, length),
                                     media_type="text/event-stream", headers=diagnostics.headers())
        result = await await_rewrite(request, future, job)
        answer, usage = await self.finished(ask, result.answer, length)
        diagnostics = diagnostics.with_result(result)
        return JSONResponse(diagnostics.body(reply.completion([answer], usage)), headers=diagnostics.headers())

    async def rewrite_events(self, request, ask: FrontRequest, reply: Reply, future: asyncio.Future, job: Job,
                             length: Optional["PromptLength"] = None):
        """The rewrite's stream: the opening event at once, the answer in word chunks once the graph is
        done, then the finish event."""
        try:
            yield reply.opening()
            result = await await_rewrite(request, future, job)
            answer, usage = await self.finished(ask, result.answer, length)
            for text in answer_chunks(answer.text):
                yield reply.event([reply.piece(text)])
            yield reply.closing(answer.finish, usage)
        finally:   # the stream ended early (the client left): no further model call for it
            if not future.done():
                job.cancel()

    async def prompt_length(self, ask: FrontRequest) -> Optional["PromptLength"]:
        """The prompt's length in the backend's tokens and its context (its /tokenize), before any
        classification; None when the backend cannot tell (the request is then classified)."""
        try:
            upstream = await self.client.post(root_url(self.backend) + "/tokenize",
                                              json={"model": self.model_name, **prompt_of(ask)})
            data = upstream.json()
            return PromptLength(int(data["count"]), int(data.get("max_model_len") or 0))
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return None

    async def finished(self, ask: FrontRequest, text: str,
                       length: Optional["PromptLength"] = None) -> tuple[Answer, Optional[Usage]]:
        """A rewrite's answer as the engine would have ended it: cut at the client's `max_tokens`
        ("length"), else "stop" with its end-of-sequence token counted; usage by the backend's
        tokenizer (the prompt's from `length` when admission measured it). Without the tokenizer (its
        endpoint failed) the answer goes whole, without usage."""
        limit = ask.body.get("max_completion_tokens") or ask.body.get("max_tokens")
        try:
            ids = await self.tokens({"prompt": text, "add_special_tokens": False})
            prompt = length.tokens if length is not None else len(await self.tokens(prompt_of(ask)))
            if isinstance(limit, int) and 0 < limit < len(ids):
                cut = await self.client.post(root_url(self.backend) + "/detokenize",
                                             json={"model": self.model_name, "tokens": ids[:limit]})
                cut.raise_for_status()
                return Answer(cut.json()["prompt"], "length"), Usage(prompt, limit)
            return Answer(text), Usage(prompt, len(ids) + 1)
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            log.exception("agent front: counting a rewrite's tokens failed")
            return Answer(text), None

    async def tokens(self, body: dict) -> list[int]:
        """The backend's token ids for a prompt or chat messages (its /tokenize)."""
        upstream = await self.client.post(root_url(self.backend) + "/tokenize", json={"model": self.model_name, **body})
        upstream.raise_for_status()
        return list(upstream.json()["tokens"])

    async def backend_healthy(self) -> bool:
        """Whether the backend's process runs and its /health answers 200."""
        if self.backend_alive is not None and not self.backend_alive():
            return False
        try:
            upstream = await self.client.get(health_url(self.backend), timeout=BACKEND_HEALTH_TIMEOUT)
        except httpx.HTTPError:
            return False
        return upstream.status_code == 200


def create_app(store: TargetStore, pipeline: Pipeline, backend: str, *, model_name: str,
               backend_guarded: bool, admin_token: Optional[str] = None, timeout: float = 600.0,
               backend_alive: Optional[Callable[[], bool]] = None, classify_workers: int = CLASSIFY_WORKERS):
    """`backend_alive`: whether the backend's process still runs (serve.py), checked by /health."""
    from fastapi import FastAPI

    front = Front(store=store, pipeline=pipeline, backend=backend.rstrip("/") + "/", model_name=model_name,
                  backend_guarded=backend_guarded, admin_token=admin_token, timeout=timeout, backend_alive=backend_alive,
                  classify_pool=ThreadPoolExecutor(classify_workers, thread_name_prefix="unlearn-classify"),
                  slots=RewriteSlots(pipeline.cfg.max_rewrites, pipeline.cfg.rewrite_queue),
                  lanes=Lanes(pipeline.cfg.passthrough_first), meta=store.policy.meta)
    # no /docs, /redoc, /openapi.json: a guarded front serves its endpoints and nothing else
    app = FastAPI(title="unlearnkit agent front", lifespan=front.lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.counters = front.counters
    app.state.front = front
    add_openai_routes(app, front)
    add_health_route(app, front)
    add_verdict_route(app, front)
    add_admin_routes(app, front)
    return app
