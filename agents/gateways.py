"""Gateway adapters over the agent front's verdict endpoint (`POST /v1/unlearn/verdict`, front.py).

LiteLLM: `UnlearnGuardrail`, a custom guardrail (pre-call hook). It sends the call's OpenAI request
(the fields the front accepts; LiteLLM's own keys stay behind) to the verdict endpoint and blocks a
flagged request with HTTP 400 and a message that names no target. In the proxy's config.yaml:

    guardrails:
      - guardrail_name: unlearn
        litellm_params:
          guardrail: unlearnkit.agents.gateways.UnlearnGuardrail
          mode: pre_call
          default_on: true
          api_base: http://front-host:8000          # the agent front (any replica)
          api_key: os.environ/UNLEARN_ADMIN_TOKEN   # the front's admin token

Fail closed: when the verdict cannot be had (front unreachable, wrong token, the store degraded)
the call is refused with 503, unless `fail_open=True`. Calls other than chat and text completions
(embeddings, images, ...) are not classified and pass. Requires `pip install litellm` (not a
dependency of unlearnkit; imported here at the top, so only a gateway imports this module).
"""

from __future__ import annotations

from typing import Optional

import httpx
from fastapi import HTTPException
from litellm.integrations.custom_guardrail import CustomGuardrail
from litellm.types.guardrails import GuardrailEventHooks

from ..guard.boundary import FIELDS

VERDICT_PATH = "/v1/unlearn/verdict"
CALL_KINDS = {"completion": "chat", "acompletion": "chat", "text_completion": "completions",
              "atext_completion": "completions"}
BLOCKED = "this request concerns information this service has unlearned"


def verdict_body(data: dict, call_type: str) -> Optional[dict]:
    """The OpenAI request a LiteLLM call stands for (only the fields the front accepts for its kind),
    or None for a call the front does not classify."""
    kind = CALL_KINDS.get(str(getattr(call_type, "value", call_type)))
    if kind is None:
        return None
    return {k: v for k, v in data.items() if k in FIELDS[kind]}


class UnlearnGuardrail(CustomGuardrail):
    def __init__(self, api_base: Optional[str] = None, api_key: Optional[str] = None, timeout: float = 10.0,
                 fail_open: bool = False, transport: Optional[httpx.AsyncBaseTransport] = None, **kwargs):
        if not api_base:
            raise ValueError("UnlearnGuardrail needs api_base: the agent front's URL (e.g. http://front:8000)")
        self.verdict_url = api_base.rstrip("/").removesuffix("/v1") + VERDICT_PATH
        self.api_key = api_key
        self.fail_open = fail_open
        self._client = httpx.AsyncClient(timeout=timeout, transport=transport)
        kwargs.setdefault("supported_event_hooks", [GuardrailEventHooks.pre_call])
        super().__init__(**kwargs)

    async def verdict(self, body: dict) -> dict:
        """The front's answer: {"flagged", "category", "path"}; HTTPException when there is none."""
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        try:
            r = await self._client.post(self.verdict_url, json=body, headers=headers)
        except httpx.HTTPError as exc:
            raise HTTPException(503, f"unlearning verdict unavailable ({type(exc).__name__})") from None
        if r.status_code == 400 or r.status_code == 413:   # the request itself is malformed: the front's reason
            raise HTTPException(r.status_code, r.json().get("error", {}).get("message", "invalid request"))
        if r.status_code != 200:
            raise HTTPException(503, f"unlearning verdict unavailable (the front answered {r.status_code})")
        return r.json()

    async def async_pre_call_hook(self, user_api_key_dict, cache, data: dict, call_type):
        if self.should_run_guardrail(data=data, event_type=GuardrailEventHooks.pre_call) is not True:
            return data
        body = verdict_body(data, call_type)
        if body is None:
            return data
        try:
            answer = await self.verdict(body)
        except HTTPException as exc:
            if self.fail_open and exc.status_code == 503:
                return data
            raise
        if answer.get("flagged"):
            raise HTTPException(400, {"error": BLOCKED, "guardrail": self.guardrail_name})
        return data
