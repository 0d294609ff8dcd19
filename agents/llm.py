"""The chat model behind each node, injected: any OpenAI-compatible endpoint (by default the
vLLM server `unlearn serve` started). Every call reports its token usage, so a request's cost
(calls, prompt tokens) can be accounted for."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional, Protocol, Sequence

from ..errors import ConfigError


class LLMError(RuntimeError):
    """A chat call failed: endpoint unreachable, timed out, or answered with an error."""


@dataclass(frozen=True)
class Reply:
    texts: list[str]               # one per requested choice
    prompt_tokens: int = 0
    completion_tokens: int = 0


class ChatModel(Protocol):
    """A model may also have `guarded = True` (its endpoint is the guarded vLLM server): then its
    `chat` takes `targets=`, names the engine's token filter must forbid too (`OpenAIChat`)."""

    def chat(self, messages: Sequence[dict], *, n: int = 1, max_tokens: int = 128,
             temperature: float = 0.0, seed: Optional[int] = None,
             choices: Optional[Sequence[str]] = None) -> Reply:
        """`choices`: the reply must be one of these strings (where the endpoint can enforce it)."""


class OpenAIChat:
    """A chat model behind an OpenAI-compatible endpoint (the `openai` client, no retries of its
    own: the pipeline retries, counts and falls back)."""

    def __init__(self, base_url: str, model: str = "", api_key: Optional[str] = None, timeout: float = 60.0,
                 structured_outputs: bool = False, guarded: bool = False):
        import openai

        self.base_url = base_url.rstrip("/")
        self.client = openai.OpenAI(base_url=self.base_url, api_key=api_key or "EMPTY",
                                    timeout=timeout, max_retries=0)
        self._model = model
        self.structured_outputs = structured_outputs   # vLLM's constrained decoding (`choices`)
        self.guarded = guarded                         # the guarded vLLM server: `targets` go in vllm_xargs

    @property
    def model(self) -> str:
        if not self._model:   # the endpoint's (first) served model
            try:
                self._model = self.client.models.list().data[0].id
            except Exception as exc:
                raise LLMError(f"{self.base_url}: cannot list models ({type(exc).__name__}: {exc})") from None
        return self._model

    def chat(self, messages, *, n=1, max_tokens=128, temperature=0.0, seed=None, choices=None, targets=()) -> Reply:
        import openai

        try:
            out = self.client.chat.completions.create(
                model=self.model, messages=list(messages), n=n, max_tokens=max_tokens,
                temperature=temperature, seed=seed, extra_body=self._extra_body(choices, targets) or None)
        except openai.OpenAIError as exc:
            raise LLMError(f"{self.base_url}: {type(exc).__name__}: {str(exc)[:300]}") from None
        usage = out.usage
        return Reply([c.message.content or "" for c in out.choices],
                     usage.prompt_tokens if usage else 0, usage.completion_tokens if usage else 0)

    def _extra_body(self, choices: Optional[Sequence[str]], targets: Sequence[str]) -> dict:
        """vLLM's fields (both on guard/boundary.py's allow-list): the reply constrained to `choices`,
        and on the guarded server `targets` as `vllm_xargs.unlearn_targets`."""
        extra: dict = {}
        if choices and self.structured_outputs:
            extra["structured_outputs"] = {"choice": list(choices)}
        if targets and self.guarded:
            extra["vllm_xargs"] = {"unlearn_targets": list(targets)}
        return extra


def endpoint_model(endpoint, default_url: str = "", default_model: str = "", guarded: bool = False,
                   backend_key: Optional[str] = None) -> OpenAIChat:
    """An `EndpointConfig` -> chat model; empty fields fall back to the served backend. `guarded`:
    that backend runs the token filter (a node with its own endpoint is never sent `vllm_xargs`);
    `backend_key`: the served backend's admin token (its constrained decoding is for operators)."""
    url = endpoint.base_url or default_url
    if not url:
        raise ConfigError("agents.llm.base_url is empty and there is no served backend to default to")
    key = None if endpoint.base_url else backend_key
    if endpoint.api_key_env:
        key = os.environ.get(endpoint.api_key_env)
        if not key:
            raise ConfigError(f"agents: environment variable {endpoint.api_key_env!r} (api_key_env) is not set")
    return OpenAIChat(url, endpoint.model or (default_model if not endpoint.base_url else ""), key, endpoint.timeout,
                      endpoint.structured_outputs, guarded=guarded and not endpoint.base_url)
