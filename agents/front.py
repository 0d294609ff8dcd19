"""`unlearn serve --agents`: an OpenAI-compatible front before the (guarded) vLLM server.

Per chat (or completion) request, the classifier runs once, in front of the engine:
  - not flagged: the request goes straight to the backend and its bytes come back as they arrive
    (streamed or not); headers `x-unlearn-path: passthrough` and `x-unlearn-reason` say so;
  - flagged: the agent graph answers it (`graph.Pipeline`); the composed answer is returned, or
    streamed as chat.completion.chunk events, with an `unlearn` object (path, route, reason,
    model calls, tokens, fallbacks taken) in the body and the same headers.
Neither the metadata nor the reason names a target: they say *that* a target matched, not which.

`unlearn_*` fields of `vllm_xargs` are checked here exactly as the guarded engine checks them
(tighten only; anything else is HTTP 400) and tighten the front's classifier too.

Admin (only with a token: $UNLEARN_ADMIN_TOKEN; `Authorization: Bearer <token>`):
    GET /admin/targets             policy targets (fixed) and live targets
    POST /admin/targets            {"name": str, "facts": [str]}: add a live target (next request)
    DELETE /admin/targets/{name}   remove a live target
    GET /admin/stats               counters: paths, routes, retries, fallbacks, errors
"""


import hmac
import json
import logging
import time
import uuid
from collections import Counter
from contextlib import asynccontextmanager
from typing import Optional

from ..guard.runtime import PREFIX, parse_request_args
from .graph import Pipeline
from .nodes import message_text
from .store import TargetStore, parse_live_target

log = logging.getLogger("unlearnkit.agents")

ROLES = {"system", "user", "assistant", "tool", "developer", "function"}
STREAM_CHUNK_WORDS = 4


class BadRequest(ValueError):
    pass


def _messages(body: dict, kind: str) -> list[dict]:
    """The request's messages (a completion prompt becomes one user message); BadRequest otherwise."""
    if kind == "completions":
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1:
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise BadRequest("'prompt' must be a string (token-id or batched prompts are not accepted by the "
                             "agent front: it must read the prompt to classify it)")
        return [{"role": "user", "content": prompt}]
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty list")
    for n, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise BadRequest(f"messages[{n}] must be an object with a 'role' in {sorted(ROLES)}")
        content = m.get("content")
        if content is not None and not isinstance(content, (str, list)):
            raise BadRequest(f"messages[{n}].content must be a string or a list of content parts")
    return messages


def _classifier_input(messages: list[dict]) -> tuple[str, list[str]]:
    texts = [message_text(m) for m in messages]
    users = [t for m, t in zip(messages, texts) if m.get("role") == "user"]
    return "\n".join(texts), users or ["\n".join(texts)]


def client_reason(reason: str) -> str:
    """The classifier's reason without target names (those stay in the server log)."""
    return "the prompt names a forget target" if reason.startswith("names") else reason


def create_app(store: TargetStore, pipeline: Pipeline, backend: str, *, model_name: str,
               backend_guarded: bool, admin_token: Optional[str] = None, timeout: float = 600.0):
    import httpx
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response, StreamingResponse
    from starlette.concurrency import run_in_threadpool

    backend = backend.rstrip("/") + "/"    # the backend's OpenAI base URL (".../v1")
    counters: Counter = Counter()
    state: dict = {}

    @asynccontextmanager
    async def lifespan(_app):
        state["client"] = httpx.AsyncClient(base_url=backend, timeout=timeout)
        yield
        await state["client"].aclose()

    app = FastAPI(title="unlearnkit agent front", lifespan=lifespan)
    app.state.counters = counters

    def error(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
        return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status_code=status)

    def classify(*args):
        store.refresh()   # a changed live-targets file is re-read (and embedded) off the event loop
        return store.classify(*args)

    async def handle(request: Request, kind: str):
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
            counters["bad_requests"] += 1
            return error(400, "the request body is not valid JSON")
        try:
            if not isinstance(body, dict):
                raise BadRequest("the request body must be a JSON object")
            messages = _messages(body, kind)
            stream = body.get("stream", False)
            if not isinstance(stream, bool):
                raise BadRequest("'stream' must be true or false")
            n = body.get("n", 1)
            if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 16:
                raise BadRequest("'n' must be an integer between 1 and 16")
            xargs = body.get("vllm_xargs") or {}
            if not isinstance(xargs, dict):
                raise BadRequest("'vllm_xargs' must be an object")
            args = parse_request_args(xargs, store.policy.meta)
        except ValueError as exc:   # BadRequest and parse_request_args' ValueErrors
            counters["bad_requests"] += 1
            return error(400, str(exc))
        whole, users = _classifier_input(messages)
        decision = None
        try:
            decision = await run_in_threadpool(classify, whole, users, args.threshold, args.targets)
            flagged, reason = decision.flagged or args.force, client_reason(decision.reason)
        except Exception:   # fail closed: an unclassifiable request goes through the rewriter
            log.exception("agent front: classification failed; routing the request to the rewriter")
            counters["classifier_errors"] += 1
            flagged, reason = True, "classification failed (fail closed)"
        if args.force and decision is not None and not decision.flagged:
            reason = "unlearn_guard requested"
        if not flagged:
            counters["passthrough"] += 1
            if not backend_guarded and any(k.startswith(PREFIX) for k in xargs):
                body = {**body, "vllm_xargs": {k: v for k, v in xargs.items() if not k.startswith(PREFIX)}}
            return await passthrough(kind, body, stream, reason)
        counters["agents"] += 1
        return await rewrite(kind, messages, args.targets, stream, n, body.get("model") or model_name, reason)

    async def passthrough(kind: str, body: dict, stream: bool, reason: str):
        headers = {"x-unlearn-path": "passthrough", "x-unlearn-reason": reason}
        client = state["client"]
        url = "chat/completions" if kind == "chat" else "completions"   # relative to the backend's /v1
        try:
            if stream:
                upstream = await client.send(client.build_request("POST", url, json=body), stream=True)

                async def relay():
                    try:
                        async for chunk in upstream.aiter_raw():
                            yield chunk
                    finally:
                        await upstream.aclose()
                return StreamingResponse(relay(), status_code=upstream.status_code, headers=headers,
                                         media_type=upstream.headers.get("content-type", "text/event-stream"))
            upstream = await client.post(url, json=body)
        except httpx.HTTPError as exc:
            counters["backend_errors"] += 1
            log.error("agent front: backend %s unreachable: %s", backend, exc)
            return error(502, f"the model server behind this front is unreachable ({type(exc).__name__})", "backend_error")
        try:
            data = upstream.json()
        except ValueError:
            return Response(upstream.content, status_code=upstream.status_code, headers=headers,
                            media_type=upstream.headers.get("content-type"))
        if isinstance(data, dict) and upstream.status_code == 200:
            data["unlearn"] = {"path": "passthrough", "reason": reason}
        return JSONResponse(data, status_code=upstream.status_code, headers=headers)

    async def rewrite(kind: str, messages: list[dict], extra: tuple, stream: bool, n: int, model: str, reason: str):
        rid = f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-unlearn-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        headers = {"x-unlearn-path": "agents", "x-unlearn-reason": reason}

        def meta(result) -> dict:
            return {"path": "agents", "classifier": reason, **result.metadata()}

        def usage(result) -> dict:
            return {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
                    "total_tokens": result.prompt_tokens + result.completion_tokens}

        if not stream:
            result = await run_in_threadpool(pipeline.run, messages, extra)
            headers["x-unlearn-route"] = result.route
            if kind == "chat":
                choices = [{"index": i, "message": {"role": "assistant", "content": result.answer},
                            "finish_reason": "stop"} for i in range(n)]
            else:
                choices = [{"index": i, "text": result.answer, "finish_reason": "stop"} for i in range(n)]
            return JSONResponse({"id": rid, "object": "chat.completion" if kind == "chat" else "text_completion",
                                 "created": created, "model": model, "choices": choices, "usage": usage(result),
                                 "unlearn": meta(result)}, headers=headers)

        def event(choices: list, extra_fields: Optional[dict] = None) -> bytes:
            data = {"id": rid, "object": "chat.completion.chunk" if kind == "chat" else "text_completion",
                    "created": created, "model": model, "choices": choices, **(extra_fields or {})}
            return f"data: {json.dumps(data)}\n\n".encode()

        def piece(i: int, text: Optional[str], finish: Optional[str] = None, role: bool = False) -> dict:
            if kind == "chat":
                delta = {"role": "assistant"} if role else ({"content": text} if text is not None else {})
                return {"index": i, "delta": delta, "finish_reason": finish}
            return {"index": i, "text": text or "", "finish_reason": finish}

        async def events():
            if kind == "chat":   # the first event at once: the graph takes seconds
                yield event([piece(i, None, role=True) for i in range(n)])
            result = await run_in_threadpool(pipeline.run, messages, extra)
            words = result.answer.split(" ")
            for start in range(0, len(words), STREAM_CHUNK_WORDS):
                text = " ".join(words[start:start + STREAM_CHUNK_WORDS])
                text = text if start == 0 else " " + text
                yield event([piece(i, text) for i in range(n)])
            yield event([piece(i, None, "stop") for i in range(n)], {"usage": usage(result), "unlearn": meta(result)})
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream", headers=headers)

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        return await handle(request, "chat")

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await handle(request, "completions")

    @app.get("/v1/models")
    async def models():
        try:
            upstream = await state["client"].get("models")
        except httpx.HTTPError as exc:
            return error(502, f"the model server behind this front is unreachable ({type(exc).__name__})", "backend_error")
        return Response(upstream.content, status_code=upstream.status_code, media_type="application/json")

    @app.get("/health")
    async def health():
        return {"status": "ok", "backend": backend, "targets": len(store.policy.targets) + len(store.live_targets())}

    # ---------------------------------------------------------------- admin
    def authorised(request: Request) -> Optional[JSONResponse]:
        if not admin_token:
            return error(403, "the admin endpoint is disabled: start the server with $UNLEARN_ADMIN_TOKEN set",
                         "permission_error")
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {admin_token}".encode()):
            counters["admin_denied"] += 1
            return error(401, "missing or wrong admin token (Authorization: Bearer <token>)", "authentication_error")
        return None

    @app.get("/admin/targets")
    async def list_targets(request: Request):
        if (denied := authorised(request)) is not None:
            return denied
        await run_in_threadpool(store.refresh)
        return {"policy": store.policy_names(), "live": [t.to_json() for t in store.live_targets()]}

    @app.post("/admin/targets")
    async def add_target(request: Request):
        if (denied := authorised(request)) is not None:
            return denied
        try:
            target = parse_live_target(await request.json())
        except ValueError as exc:
            return error(400, str(exc))
        await run_in_threadpool(store.refresh)
        if not await run_in_threadpool(store.add, target):
            return error(409, f"{target.name!r} is a policy target already", "conflict")
        log.info("agent front: live target added: %s", target.name)
        return JSONResponse({"added": target.name, "live": len(store.live_targets())}, status_code=201)

    @app.delete("/admin/targets/{name}")
    async def remove_target(name: str, request: Request):
        if (denied := authorised(request)) is not None:
            return denied
        await run_in_threadpool(store.refresh)
        if name.lower() in {n.lower() for n in store.policy_names()}:
            return error(409, f"{name!r} is compiled into the guard policy; rebuild the policy to remove it", "conflict")
        if not await run_in_threadpool(store.remove, name):
            return error(404, f"no live target {name!r}", "not_found")
        log.info("agent front: live target removed: %s", name)
        return {"removed": name, "live": len(store.live_targets())}

    @app.get("/admin/stats")
    async def stats(request: Request):
        if (denied := authorised(request)) is not None:
            return denied
        return {"front": dict(counters), "agents": dict(pipeline.stats),
                "live_targets_file_errors": store.reload_errors}

    return app
