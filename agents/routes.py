"""The agent front's routes: the OpenAI endpoints (classified, then relayed or rewritten), GET
/health, the verdict route for gateways and the admin API (both behind the admin token). `front`
is the app's `front.Front`. No `from __future__ import annotations` here: FastAPI reads each route's
`Request` annotation, imported inside the function that adds the route, as an object."""


import logging
from typing import Optional

import httpx

from ..guard import boundary
from ..guard.boundary import Rejection
from .http import backend_unreachable, error_response, read_bounded
from .store import StoreUnavailable, parse_live_target

log = logging.getLogger("unlearnkit.agents")


def verdict_kind(body) -> tuple[Optional[str], Optional[Rejection]]:
    """Which OpenAI request a verdict body is: chat (`messages`) or completions (`prompt`)."""
    if not isinstance(body, dict):
        return None, Rejection(400, None, "the body must be a JSON object: an OpenAI chat or completions request")
    kinds = [k for k, field in (("chat", "messages"), ("completions", "prompt")) if field in body]
    if len(kinds) != 1:
        return None, Rejection(400, "messages", "a verdict request is an OpenAI chat request (with 'messages') "
                               "or a completions request (with 'prompt'), exactly one of them")
    return kinds[0], None


def add_openai_routes(app, front) -> None:
    """POST /v1/chat/completions and /v1/completions (classified, then relayed or rewritten); GET
    /v1/models (relayed)."""
    from fastapi import Request
    from fastapi.responses import Response

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        return await front.handle(request, "chat")

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await front.handle(request, "completions")

    @app.get("/v1/models")
    async def models():
        try:
            upstream = await front.client.get("models")
        except httpx.HTTPError as exc:
            return backend_unreachable(exc)
        return Response(upstream.content, status_code=upstream.status_code, media_type="application/json")


def add_health_route(app, front) -> None:
    """GET /health."""
    from fastapi.responses import JSONResponse
    from starlette.concurrency import run_in_threadpool

    @app.get("/health")
    async def health():
        """ok, or 503 (backend down, or degraded: the shared live targets file cannot be read); nothing
        about the targets (their number is the admin's: /admin/targets)."""
        if not await front.backend_healthy():
            front.counters["health_failures"] += 1
            return error_response(503, "the model server behind this front is down", "backend_error")
        await run_in_threadpool(front.store.refresh)
        if front.store.degraded is not None:
            front.counters["health_failures"] += 1
            return JSONResponse({"status": "degraded", "error": {
                "message": "the shared live targets store cannot be read: flagged requests are refused",
                "type": "service_unavailable", "param": None, "code": 503}}, status_code=503)
        return {"status": "ok"}


def add_verdict_route(app, front) -> None:
    """POST /v1/unlearn/verdict (for gateways)."""
    from fastapi import Request

    @app.post("/v1/unlearn/verdict")
    async def verdict(request: Request):
        """The classifier's decision on an OpenAI request, for a gateway; admin-authenticated."""
        if (denied := front.authorised(request)) is not None:
            return denied
        raw = await read_bounded(request)
        data, rejection = boundary.parse_body(raw)
        if rejection is None:
            kind, rejection = verdict_kind(data)
        if rejection is not None:
            return front.refuse(rejection)
        ask, rejection = front.checked(kind, "/v1/chat/completions" if kind == "chat" else "/v1/completions", raw)
        if rejection is not None:
            return front.refuse(rejection)
        result = await front.classified(ask)
        front.counters["verdicts_flagged" if result.flagged else "verdicts_passed"] += 1
        if result.flagged and result.degraded:
            return front.unavailable()
        return {"flagged": result.flagged, "category": result.category if result.flagged else None,
                "path": "agents" if result.flagged else "passthrough"}


def add_admin_routes(app, front) -> None:
    """/admin/targets (list, add, remove live targets) and /admin/stats, with the admin token."""
    from fastapi import Request
    from fastapi.responses import JSONResponse
    from starlette.concurrency import run_in_threadpool

    store = front.store

    @app.get("/admin/targets")
    async def list_targets(request: Request):
        if (denied := front.authorised(request)) is not None:
            return denied
        await run_in_threadpool(store.refresh)
        return {"policy": store.policy_names(), "live": [t.to_json() for t in store.live_targets()],
                "live_version": store.version, "degraded": store.degraded}

    @app.post("/admin/targets")
    async def add_target(request: Request):
        if (denied := front.authorised(request)) is not None:
            return denied
        data, rejection = boundary.parse_body(await read_bounded(request))
        if rejection is not None:
            return front.refuse(rejection)
        try:
            target = parse_live_target(data)
        except ValueError as exc:
            return error_response(400, str(exc))
        try:
            if not await run_in_threadpool(store.add, target):
                return error_response(409, f"{target.name!r} is a policy target already", "conflict")
        except StoreUnavailable as exc:
            return error_response(503, str(exc), "service_unavailable", {"retry-after": "5"})
        log.info("agent front: live target added: %s", target.name)
        return JSONResponse({"added": target.name, "live": len(store.live_targets())}, status_code=201)

    @app.delete("/admin/targets/{name}")
    async def remove_target(name: str, request: Request):
        if (denied := front.authorised(request)) is not None:
            return denied
        await run_in_threadpool(store.refresh)
        if name.lower() in {n.lower() for n in store.policy_names()}:
            return error_response(409, f"{name!r} is compiled into the guard policy; rebuild the policy to remove it",
                                  "conflict")
        try:
            if not await run_in_threadpool(store.remove, name):
                return error_response(404, f"no live target {name!r}", "not_found")
        except StoreUnavailable as exc:
            return error_response(503, str(exc), "service_unavailable", {"retry-after": "5"})
        log.info("agent front: live target removed: %s", name)
        return {"removed": name, "live": len(store.live_targets())}

    @app.get("/admin/stats")
    async def stats(request: Request):
        if (denied := front.authorised(request)) is not None:
            return denied
        return {"front": dict(front.counters), "agents": dict(front.pipeline.stats),
                "rewrites_admitted": front.slots.admitted, "rewrite_wait_s": round(front.lanes.waited, 3),
                "live_targets_file_errors": store.reload_errors, "live_targets_degraded": store.degraded}


