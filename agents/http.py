"""HTTP helpers the agent front's routes share: the backend's URLs, a bounded body read, and
OpenAI-style error answers."""

from __future__ import annotations

from typing import Optional

from ..guard import boundary


def root_url(backend: str) -> str:
    """The backend's root from its OpenAI base URL (vLLM serves /health and /tokenize beside /v1)."""
    base = backend.rstrip("/")
    return base[:-3] if base.endswith("/v1") else base


def health_url(backend: str) -> str:
    return root_url(backend) + "/health"


def completion_url(kind: str) -> str:
    """The backend's endpoint for a request kind, relative to its /v1."""
    return "chat/completions" if kind == "chat" else "completions"



async def read_bounded(request, limit: int = boundary.MAX_BODY_BYTES) -> bytes:
    """The body, or (past `limit`) `limit + 1` bytes without reading on: boundary.check answers 413."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return bytes(limit + 1)
    chunks, size = [], 0
    async for chunk in request.stream():
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            break
    return b"".join(chunks)



def error_response(status: int, message: str, kind: str = "invalid_request_error", headers: Optional[dict] = None):
    """An OpenAI-style error body with `status`."""
    from fastapi.responses import JSONResponse

    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": status}},
                        status_code=status, headers=headers)


def backend_unreachable(exc: Exception):
    """502: the backend did not answer (`exc` is the client's error)."""
    return error_response(502, f"the model server behind this front is unreachable ({type(exc).__name__})",
                          "backend_error")


