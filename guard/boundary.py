"""What a guarded server accepts: every request-level rule, in one place, framework-free.

The token filter in the engine guards what is *sampled*. Everything else a client can ask of an
OpenAI-compatible server (other endpoints, other output channels, sampling modes that bypass
logits processors, fields that cancel the penalty) is decided here, before the request reaches
the engine. Both fronts call it: vLLM's API server through the ASGI adapter
`guard/vllm_middleware.py` (`unlearn serve --guard`) and the agent front (`unlearn serve --agents`).

The rules, and why:

* Only the generation endpoints (chat, completions, responses), tokenize/detokenize and read-only
  status endpoints are served; anything else (pooling, scoring, stored responses, admin/dev
  endpoints of the engine) is 404: a guarded server offers no path around the guard.
* Fields are an allow-list per endpoint: a field this module does not know (a newer vLLM's) is
  refused with 400 naming it, never passed through unexamined.
* Channels: sampled-token log-probabilities (`logprobs`, `top_logprobs`, `logprob_token_ids`) are
  served and carry the *guarded* distribution (the server runs with
  `--logprobs-mode processed_logprobs`, computed after the guard's mask and penalty). Prompt
  log-probabilities (`prompt_logprobs`, completions `echo` + `logprobs`) are teacher-forced over
  text the client chooses, before any logits processor runs: refused with 400 (score a guarded
  system with `unlearn eval --guard`, which applies the guard to teacher forcing).
* Modes that bypass logits processors (`use_beam_search`) or inputs the classifier cannot read
  (`prompt_embeds`, a request-supplied `chat_template`, multimodal payloads, KV transfer): 400.
* Fields that could loosen the policy: `logit_bias` may only push tokens down (values <= 0), on at
  most 300 tokens (lowering every token but one raises that one);
  `presence_penalty` / `frequency_penalty` >= 0 and `repetition_penalty` >= 1 (smaller values
  reward tokens and so cancel the semantic penalty); `unlearn_*` keys of `vllm_xargs` are checked
  by `runtime.parse_request_args` (tighten only). A high `temperature` is answered in the engine:
  the penalty is scaled by it, so its effect after temperature scaling is never weaker.

`check(method, path, body, meta)` returns None or a `Rejection` (status, field, message). Messages
name the field and the rule; they never disclose the policy's threshold, penalty or targets.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Callable, Optional

from .runtime import parse_request_args

MAX_BODY_BYTES = 4 * 1024 * 1024
MAX_JSON_DEPTH = 32


@dataclass(frozen=True)
class Rejection:
    status: int
    field: str
    message: str

    def body(self) -> dict:
        """An OpenAI-style error object."""
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        return {"error": {"message": self.message, "type": kind, "param": self.field or None, "code": self.status}}


# ---------------------------------------------------------------------------------- endpoints
GENERATION = {"/v1/chat/completions": "chat", "/v1/completions": "completions", "/v1/responses": "responses"}
OTHER_POST = {"/tokenize", "/detokenize"}
READ_ONLY = {"/v1/models", "/health", "/ping", "/version", "/metrics", "/load"}


def check_endpoint(method: str, path: str) -> Optional[Rejection]:
    path = path.rstrip("/") or "/"
    if method == "POST" and (path in GENERATION or path in OTHER_POST):
        return None
    if method in ("GET", "HEAD") and path in READ_ONLY:
        return None
    if method == "OPTIONS":
        return None
    return Rejection(404, "", f"{method} {path} is not served by a guarded server")


# ---------------------------------------------------------------------------------- field rules
Rule = Callable[[Any], Optional[str]]     # value -> None (accepted) or what is wrong with it


def _any(_value) -> Optional[str]:
    return None


def _finite(value) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(float(value)) else None


def _at_least(bound: float, why: str) -> Rule:
    def rule(value) -> Optional[str]:
        if value is None:
            return None
        number = _finite(value)
        if number is None:
            return "must be a finite number"
        return None if number >= bound else f"must be >= {bound:g} on a guarded server ({why})"
    return rule


MAX_LOGIT_BIAS = 300   # entries, as OpenAI's API allows


def _logit_bias(value) -> Optional[str]:
    """Biases <= 0 only, on at most MAX_LOGIT_BIAS tokens: sampling reads only differences, so lowering
    every token but one is raising that one (and could cancel the guard's penalty)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        return "must be an object of token id -> bias"
    if len(value) > MAX_LOGIT_BIAS:
        return f"at most {MAX_LOGIT_BIAS} tokens on a guarded server (lowering all tokens but a few raises those few)"
    for key, bias in value.items():
        number = _finite(bias)
        if number is None:
            return f"bias for token {str(key)[:20]!r} must be a finite number"
        if number > 0:
            return "positive biases are refused on a guarded server (they can outweigh its penalty); use values <= 0"
    return None


def _refused(why: str) -> Rule:
    def rule(value) -> Optional[str]:
        return None if value is None or value is False else why
    return rule


PROMPT_LOGPROBS = ("teacher-forced prompt log-probabilities are computed before the guard; "
                   "score a guarded system with `unlearn eval --guard` instead")

COMMON: dict[str, Rule] = {
    "model": _any, "stream": _any, "stream_options": _any, "n": _any, "seed": _any, "stop": _any,
    "stop_token_ids": _any, "temperature": _any, "top_p": _any, "top_k": _any, "min_p": _any,
    "max_tokens": _any, "min_tokens": _any, "ignore_eos": _any, "include_stop_str_in_output": _any,
    "skip_special_tokens": _any, "spaces_between_special_tokens": _any, "user": _any,
    "request_id": _any, "priority": _any, "cache_salt": _any, "session_id": _any,
    "truncate_prompt_tokens": _any, "truncation_side": _any, "add_special_tokens": _any,
    "return_tokens_as_token_ids": _any, "return_token_ids": _any, "return_token_offsets": _any,
    "bad_words": _any, "allowed_token_ids": _any, "structured_outputs": _any, "response_format": _any,
    "stream_interval": _any, "repetition_detection": _any, "thinking_token_budget": _any,
    "logprobs": _any,
    "logprob_token_ids": _refused("log-probabilities of chosen token ids would show which tokens the guard "
                                  "withholds (an oracle for its targets)"),
    "logit_bias": _logit_bias,
    "presence_penalty": _at_least(0.0, "a negative penalty rewards tokens"),
    "frequency_penalty": _at_least(0.0, "a negative penalty rewards tokens"),
    "repetition_penalty": _at_least(1.0, "below 1 it rewards tokens"),
    "use_beam_search": _refused("beam search picks tokens outside the logits processors that guard them"),
    "prompt_logprobs": _refused(PROMPT_LOGPROBS),
    "mm_processor_kwargs": _refused("multimodal inputs are not classified by the guard"),
    "media_io_kwargs": _refused("multimodal inputs are not classified by the guard"),
    "mm_payload": _refused("multimodal inputs are not classified by the guard"),
    "return_mm_kwargs": _refused("multimodal inputs are not classified by the guard"),
    "kv_transfer_params": _refused("KV-cache transfer bypasses the prompt the guard classifies"),
    "ec_transfer_params": _refused("encoder-cache transfer bypasses the prompt the guard classifies"),
    "vllm_xargs": _any,   # checked against the policy in `check_body`
}

CHAT = dict(COMMON, **{
    "messages": _any, "max_completion_tokens": _any, "top_logprobs": _any, "tools": _any,
    "tool_choice": _any, "parallel_tool_calls": _any, "reasoning_effort": _any, "include_reasoning": _any,
    "echo": _any, "add_generation_prompt": _any, "continue_final_message": _any, "documents": _any,
    "chat_template_kwargs": _any, "return_prompt_text": _any, "watermarking": _any,
    "chat_template": _refused("a request-supplied chat template changes what the guard classifies"),
})

COMPLETIONS = dict(COMMON, **{
    "prompt": _any, "echo": _any, "suffix": _any, "watermarking": _any,
    "prompt_embeds": _refused("prompt embeddings cannot be read by the guard's classifier"),
})

RESPONSES = {
    **{k: COMMON[k] for k in ("model", "stream", "temperature", "top_p", "top_k", "min_p", "user", "request_id",
                              "priority", "cache_salt", "session_id", "skip_special_tokens", "include_stop_str_in_output",
                              "presence_penalty", "frequency_penalty", "repetition_penalty", "logit_bias", "seed",
                              "stop", "stop_token_ids", "ignore_eos", "structured_outputs", "vllm_xargs",
                              "mm_processor_kwargs", "media_io_kwargs", "mm_payload", "return_mm_kwargs",
                              "kv_transfer_params", "ec_transfer_params")},
    "input": _any, "instructions": _any, "max_output_tokens": _any, "max_tool_calls": _any, "metadata": _any,
    "parallel_tool_calls": _any, "previous_response_id": _any, "prompt": _any, "reasoning": _any,
    "include_reasoning": _any, "service_tier": _any, "store": _any, "text": _any, "tool_choice": _any,
    "tools": _any, "top_logprobs": _any, "truncation": _any, "include": _any, "prompt_cache_key": _any,
    "watermarking": _any, "background": _any, "chat_template_kwargs": _any,
    "enable_response_messages": _any, "previous_input_messages": _any,
}

FIELDS: dict[str, dict[str, Rule]] = {"chat": CHAT, "completions": COMPLETIONS, "responses": RESPONSES}


def check_fields(kind: str, body: dict, meta: Optional[dict]) -> Optional[Rejection]:
    """The allow-list and per-field rules of one generation endpoint."""
    rules = FIELDS[kind]
    for key in body:
        if key not in rules:
            return Rejection(400, str(key)[:60], f"field {str(key)[:60]!r} is not accepted by a guarded server")
    for key, value in body.items():
        problem = rules[key](value)
        if problem:
            return Rejection(400, key, f"{key}: {problem}")
    rejection = _echo_with_prompt_logprobs(kind, body) or _probing_logprobs(kind, body)
    if rejection is not None:
        return rejection
    return _check_xargs(body.get("vllm_xargs"), meta)


def _echo_with_prompt_logprobs(kind: str, body: dict) -> Optional[Rejection]:
    """vLLM turns `echo` into prompt log-probabilities: completions set `prompt_logprobs = logprobs`
    (0 or false too: 0 is each prompt token's own log-probability), chat `prompt_logprobs =
    top_logprobs`, which is 0 when absent or null, so a chat echo always computes them."""
    if not body.get("echo"):
        return None
    if kind == "completions" and body.get("logprobs") is not None:
        return Rejection(400, "echo", f"echo with logprobs: {PROMPT_LOGPROBS}")
    if kind == "chat":
        return Rejection(400, "echo", f"echo on chat returns prompt log-probabilities: {PROMPT_LOGPROBS}")
    return None


AMPLIFIERS = ("unlearn_guard", "unlearn_penalty", "unlearn_top_k", "unlearn_threshold")


def _wants_logprobs(kind: str, body: dict) -> bool:
    """Whether the reply carries sampled-token log-probabilities. Completions' `logprobs` is a count:
    0 (and false, which vLLM reads as 0) still returns the sampled token's own; chat's is a switch."""
    logprobs = body.get("logprobs")
    asked = logprobs is not None if kind == "completions" else (logprobs is not None and logprobs is not False)
    include = body.get("include")
    return asked or body.get("top_logprobs") not in (None, 0) or (
        isinstance(include, list) and any("logprobs" in str(x) for x in include))


def _probing_logprobs(kind: str, body: dict) -> Optional[Rejection]:
    """Log-probabilities together with arguments that force or amplify the guard would map what it
    withholds (a huge `unlearn_penalty` sends every key token to the floor): refused together."""
    xargs = body.get("vllm_xargs")
    wants = _wants_logprobs(kind, body)
    if wants and isinstance(xargs, dict) and any(k in xargs for k in AMPLIFIERS):
        return Rejection(400, "logprobs", "logprobs cannot be combined with unlearn_guard, unlearn_penalty, "
                         "unlearn_top_k or unlearn_threshold (they would map what the guard withholds)")
    return None


def _check_xargs(xargs: Any, meta: Optional[dict]) -> Optional[Rejection]:
    if xargs is None:
        return None
    if not isinstance(xargs, dict):
        return Rejection(400, "vllm_xargs", "vllm_xargs must be an object")
    others = sorted(str(k)[:40] for k in xargs if not (isinstance(k, str) and k.startswith("unlearn_")))
    if others:   # vLLM reads some keys itself (e.g. kv_transfer_params): only the guard's own are accepted
        return Rejection(400, "vllm_xargs", f"vllm_xargs: keys {others[:5]} are not accepted by a guarded server "
                         "(only unlearn_* arguments)")
    if meta is None:
        if any(isinstance(k, str) and k.startswith("unlearn_") for k in xargs):
            return Rejection(400, "vllm_xargs", "this server has no unlearning policy; unlearn_* arguments are not accepted")
        return None
    try:
        parse_request_args(xargs, meta)
    except (ValueError, OverflowError) as err:
        return Rejection(400, "vllm_xargs", f"vllm_xargs: {err}")
    return None


# ---------------------------------------------------------------------------------- constraints
CONSTRAINED = Rejection(400, "structured_outputs",
                        "the requested output constraint (structured output / grammar / allowed tokens) leaves only "
                        "tokens this server withholds; it cannot be answered")


def constrains_output(body: Optional[dict]) -> bool:
    """Whether a request restricts which tokens may be sampled (a grammar, a schema, a token
    allow-list). When the guard withholds every token such a constraint allows, the engine ends
    the request with an error; a guarded server answers that as `CONSTRAINED` (400), not 500."""
    if not body:
        return False
    fmt = body.get("response_format")
    text = body.get("text")
    return bool(body.get("structured_outputs") or body.get("allowed_token_ids")
                or (isinstance(fmt, dict) and fmt.get("type") not in (None, "text"))
                or (isinstance(text, dict) and isinstance(text.get("format"), dict)
                    and text["format"].get("type") not in (None, "text"))
                or body.get("tool_choice") not in (None, "none", "auto"))


# ---------------------------------------------------------------------------------- body
def _depth(value: Any, limit: int) -> int:
    """Nesting depth of a decoded JSON value, stopping once it passes `limit`."""
    stack, deepest = [(value, 1)], 0
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
    return deepest


class _OutOfRange(ValueError):
    """An integer literal past the float range (a rule's float(value) would raise OverflowError)."""


def _float_range_int(text: str) -> int:
    if len(text.lstrip("-")) > 308:
        raise _OutOfRange(text[:20])
    return int(text)


def _not_json_text(body: dict) -> Optional[Rejection]:
    """The first field holding what JSON cannot carry and so no encoder downstream accepts (relaying or
    answering it fails): NaN or an infinite number (Python's json reads NaN, Infinity and 1e400), a
    string with a lone UTF-16 surrogate ("\\ud800"). At C speed: one encoding per field."""
    for key, value in body.items():
        field = key[:60].encode("utf-8", "backslashreplace").decode()    # printable even when it is the culprit
        try:
            json.dumps([key, value], ensure_ascii=False, allow_nan=False).encode("utf-8")
        except UnicodeEncodeError:
            return Rejection(400, field, f"{field!r}: a string with an unpaired UTF-16 surrogate is not text")
        except ValueError:
            return Rejection(400, field, f"{field!r}: numbers must be finite (no NaN or Infinity)")
    return None


def parse_body(raw: bytes) -> tuple[Optional[dict], Optional[Rejection]]:
    """(the JSON object, None) or (None, why it is refused): too large, not JSON, too deep, not an object."""
    if len(raw) > MAX_BODY_BYTES:
        return None, Rejection(413, "", f"request body larger than {MAX_BODY_BYTES} bytes")
    try:
        body = json.loads(raw, parse_int=_float_range_int)
    except _OutOfRange:
        return None, Rejection(400, "", "request body holds an integer beyond the float range")
    except (ValueError, RecursionError):
        return None, Rejection(400, "", "request body is not valid JSON")
    if _depth(body, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        return None, Rejection(400, "", f"request body nested deeper than {MAX_JSON_DEPTH} levels")
    if not isinstance(body, dict):
        return None, Rejection(400, "", "request body must be a JSON object")
    rejection = _not_json_text(body)
    return (None, rejection) if rejection is not None else (body, None)


def check(method: str, path: str, raw: bytes, meta: Optional[dict]) -> tuple[Optional[dict], Optional[Rejection]]:
    """Everything a guarded server decides about a request before the engine sees it."""
    rejection = check_endpoint(method, path)
    if rejection is not None or method != "POST":
        return None, rejection
    body, rejection = parse_body(raw)
    if rejection is not None:
        return None, rejection
    kind = GENERATION.get(path.rstrip("/"))
    if kind is None:
        return body, None
    return body, check_fields(kind, body, meta)
