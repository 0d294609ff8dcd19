"""ASGI adapter of `guard/boundary.py` for vLLM's API server (`--middleware`, added by `unlearn serve`).

Reads the whole body once, asks `boundary.check`, and either answers the rejection itself or
replays the body to vLLM unchanged. The policy comes from $UNLEARN_GUARD_POLICY, as in the engine;
the operator endpoints' token from $UNLEARN_ADMIN_TOKEN. What the engine answers (its own errors
included) goes back as it is.
"""

from __future__ import annotations

import json
import logging
import os

from .boundary import ADMIN_TOKEN_ENV, MAX_BODY_BYTES, Rejection, admin_authorised, check
from .runtime import policy_meta_from_env

log = logging.getLogger("unlearnkit.guard")


async def _read_body(receive) -> tuple[bytes, bool]:
    """(body, complete); stops reading past the size limit."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(chunks), False
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return b"x" * size, True      # over the limit: `check` refuses it by size
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), True


async def _answer(send, rejection: Rejection) -> None:
    payload = json.dumps(rejection.body()).encode()
    await send({"type": "http.response.start", "status": rejection.status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})


def _header(scope, name: bytes) -> str:
    """One request header's value ("" when absent)."""
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return ""


class GuardBoundary:
    def __init__(self, app):
        self.app = app
        policy_meta_from_env()     # a bad policy fails the server at start-up

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket":   # no rule reads a socket's messages: none is served
            log.info("unlearning guard: refused a WebSocket connection to %s", scope.get("path", ""))
            await receive()                 # websocket.connect; a close before accepting is answered 403
            return await send({"type": "websocket.close", "code": 1008})
        if scope["type"] != "http":         # lifespan
            return await self.app(scope, receive, send)
        method, path = scope["method"], scope["path"]
        raw, complete = (await _read_body(receive)) if method == "POST" else (b"", True)
        if not complete:
            return
        admin = admin_authorised(_header(scope, b"authorization"), os.environ.get(ADMIN_TOKEN_ENV))
        _, rejection = check(method, path, raw, policy_meta_from_env(), admin)   # a replaced policy's own limits
        if rejection is not None:
            log.info("unlearning guard: refused %s %s with %d (%s)", method, path, rejection.status, rejection.field or "-")
            return await _answer(send, rejection)
        sent = False

        async def replay():
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": raw, "more_body": False}

        return await self.app(scope, replay, send)
