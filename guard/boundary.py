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
* Output constraints (`structured_outputs`, `allowed_token_ids`, a non-text `response_format` or
  `text.format`, a required or named `tool_choice`): one 400 for the whole class, whatever the
  constraint holds (requests with the admin token excepted: the agent front's own calls). A constraint that left only withheld tokens would fail where a decoy's
  succeeds, so answering some constraints and refusing others tells a client what is withheld
  (who is on the forget list, a target's facts one candidate word at a time).
* `bad_words` is bounded like `logit_bias` (banning all tokens but a few is a finite choice), and
  `n` is an integer between 1 and MAX_N (every child is classified and guarded).
* Operator endpoints (`/metrics`, `/load`, `/server_info`) are served only with the admin token
  (`Authorization: Bearer $UNLEARN_ADMIN_TOKEN`); without it they are 404, like any unserved path.
  The engine's counters tell one client about another's prompts (prefix-cache hits).
* Well-formedness: boolean fields must be booleans, messages objects with a known role and known
  fields (a role the classifier does not read but the template may render is a door).
* Fields that could loosen the policy: `logit_bias` may only push tokens down (values <= 0), on at
  most 300 tokens (lowering every token but one raises that one);
  `presence_penalty` / `frequency_penalty` >= 0 and `repetition_penalty` >= 1 (smaller values
  reward tokens and so cancel the semantic penalty); `unlearn_*` keys of `vllm_xargs` are read
  by `runtime.parse_request_args`: values that would loosen the policy are clamped to it silently,
  so which values are accepted tells nothing of the policy's numbers. A high `temperature` is answered in the engine:
  the penalty is scaled by it, so its effect after temperature scaling is never weaker.

`check(method, path, body, meta, admin)` returns the body and None, or a `Rejection` (status, field,
message). Whether a request is refused depends on its form alone, never on whether its content
touches what the guard withholds; messages name the field and the rule, never the policy's
threshold, penalty or targets.
"""

from __future__ import annotations

import hmac
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
READ_ONLY = {"/v1/models", "/health", "/ping", "/version"}
OPERATOR = {"/metrics", "/load", "/server_info"}    # GET, with the admin token only
ADMIN_TOKEN_ENV = "UNLEARN_ADMIN_TOKEN"


def admin_authorised(authorization: str, token: Optional[str]) -> bool:
    """Whether an `Authorization` header carries the admin token (never, when none is set)."""
    return bool(token) and hmac.compare_digest(authorization.encode(), f"Bearer {token}".encode())


def check_endpoint(method: str, path: str, admin: bool = False) -> Optional[Rejection]:
    path = path.rstrip("/") or "/"
    if method == "POST" and (path in GENERATION or path in OTHER_POST):
        return None
    if method in ("GET", "HEAD") and (path in READ_ONLY or (admin and path in OPERATOR)):
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


def _boolean(value) -> Optional[str]:
    return None if value is None or isinstance(value, bool) else "must be true or false"


MAX_N = 16   # choices a request may ask for: each is classified and guarded


def _choices(value) -> Optional[str]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_N:
        return f"must be an integer between 1 and {MAX_N} on a guarded server"
    return None


MAX_BAD_WORDS = MAX_LOGIT_BIAS


def _bad_words(value) -> Optional[str]:
    """At most MAX_BAD_WORDS strings: banning every token but a few is a finite choice (see CONSTRAINT)."""
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(word, str) for word in value):
        return "must be a list of strings"
    if len(value) > MAX_BAD_WORDS:
        return f"at most {MAX_BAD_WORDS} words on a guarded server (banning all tokens but a few chooses those few)"
    return None


ROLES = ("system", "developer", "user", "assistant", "tool", "function")
# message fields a chat template may render besides role and content (the classifier reads them all)
MESSAGE_FIELDS = ("name", "tool_calls", "tool_call_id", "function_call", "reasoning", "reasoning_content",
                  "refusal", "tools", "task")


class Within(str):
    """What is wrong, found at a place inside the field (`where`: "messages[2].role")."""

    def __new__(cls, where: str, message: str):
        out = super().__new__(cls, message)
        out.where = where
        return out


MAX_MESSAGES = 1024   # a chat's messages: the template renders each one before the engine's length check


def _messages(value) -> Optional[str]:
    """A non-empty list of at most MAX_MESSAGES objects, each with a known role and only fields the
    classifier reads."""
    if not isinstance(value, list) or not value:
        return "must be a non-empty list of messages"
    if len(value) > MAX_MESSAGES:
        return f"at most {MAX_MESSAGES} messages on a guarded server"
    for n, message in enumerate(value):
        if not isinstance(message, dict):
            return Within(f"messages[{n}]", f"messages[{n}] must be an object with a role")
        role = message.get("role")
        if not isinstance(role, str) or role not in ROLES:
            return Within(f"messages[{n}].role", f"messages[{n}].role must be one of {list(ROLES)}")
        unknown = sorted(str(k)[:40] for k in message if k not in ("role", "content") + MESSAGE_FIELDS)
        if unknown:
            return Within(f"messages[{n}].{unknown[0]}",
                          f"messages[{n}]: field(s) {unknown[:5]} are not accepted by a guarded server")
    return None


CONSTRAINT = ("output constraints (structured outputs, a non-text response_format, allowed_token_ids, a required or "
              "named tool_choice) are not served by a guarded server: a constraint can require tokens it withholds")


def _tool_choice(value) -> Optional[str]:
    return None if value in (None, "none", "auto") else CONSTRAINT


def _text_format(value) -> Optional[str]:
    """`response_format` (chat) and `text` (responses: its `format`): free text only."""
    fmt = value.get("format") if isinstance(value, dict) and "format" in value else value
    if fmt is None or (isinstance(fmt, dict) and fmt.get("type") in (None, "text")):
        return None
    return CONSTRAINT


def _refused(why: str) -> Rule:
    def rule(value) -> Optional[str]:
        return None if value is None or value is False else why
    return rule


PROMPT_LOGPROBS = ("teacher-forced prompt log-probabilities are computed before the guard; "
                   "score a guarded system with `unlearn eval --guard` instead")

COMMON: dict[str, Rule] = {
    "model": _any, "stream": _boolean, "stream_options": _any, "n": _choices, "seed": _any, "stop": _any,
    "stop_token_ids": _any, "temperature": _any, "top_p": _any, "top_k": _any, "min_p": _any,
    "max_tokens": _any, "min_tokens": _any, "ignore_eos": _boolean, "include_stop_str_in_output": _boolean,
    "skip_special_tokens": _boolean, "spaces_between_special_tokens": _boolean, "user": _any,
    "request_id": _any, "priority": _any, "cache_salt": _any, "session_id": _any,
    "truncate_prompt_tokens": _any, "truncation_side": _any, "add_special_tokens": _boolean,
    "return_tokens_as_token_ids": _boolean, "return_token_ids": _boolean, "return_token_offsets": _boolean,
    "bad_words": _bad_words, "allowed_token_ids": _refused(CONSTRAINT), "structured_outputs": _refused(CONSTRAINT),
    "response_format": _text_format,
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
    "messages": _messages, "max_completion_tokens": _any, "top_logprobs": _any, "tools": _any,
    "tool_choice": _tool_choice, "parallel_tool_calls": _boolean, "reasoning_effort": _any,
    "include_reasoning": _boolean, "echo": _boolean, "add_generation_prompt": _boolean,
    "continue_final_message": _boolean, "documents": _any, "chat_template_kwargs": _any,
    "return_prompt_text": _boolean, "watermarking": _any,
    "chat_template": _refused("a request-supplied chat template changes what the guard classifies"),
})

COMPLETIONS = dict(COMMON, **{
    "prompt": _any, "echo": _boolean, "suffix": _any, "watermarking": _any,
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
    "include_reasoning": _boolean, "service_tier": _any, "store": _boolean, "text": _text_format,
    "tool_choice": _tool_choice, "tools": _any, "top_logprobs": _any, "truncation": _any, "include": _any, "prompt_cache_key": _any,
    "watermarking": _any, "background": _boolean, "chat_template_kwargs": _any,
    "enable_response_messages": _any, "previous_input_messages": _any,
}

FIELDS: dict[str, dict[str, Rule]] = {"chat": CHAT, "completions": COMPLETIONS, "responses": RESPONSES}
# output constraints an operator's own requests may use (the agent front's audit and critic calls
# constrain their verdicts to a few fixed words): with the admin token these fields are not refused
OPERATOR_FIELDS = ("structured_outputs", "allowed_token_ids", "response_format", "text", "tool_choice")


def check_fields(kind: str, body: dict, meta: Optional[dict], admin: bool = False) -> Optional[Rejection]:
    """The allow-list and per-field rules of one generation endpoint."""
    rules = FIELDS[kind]
    for key in body:
        if key not in rules:
            return Rejection(400, str(key)[:60], f"field {str(key)[:60]!r} is not accepted by a guarded server")
    for key, value in body.items():
        if admin and key in OPERATOR_FIELDS:
            continue
        problem = rules[key](value)
        if isinstance(problem, Within):
            return Rejection(400, problem.where, str(problem))
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


def check(method: str, path: str, raw: bytes, meta: Optional[dict],
          admin: bool = False) -> tuple[Optional[dict], Optional[Rejection]]:
    """Everything a guarded server decides about a request before the engine sees it; `admin`: the
    request carries the admin token (operator endpoints)."""
    rejection = check_endpoint(method, path, admin)
    if rejection is not None or method != "POST":
        return None, rejection
    body, rejection = parse_body(raw)
    if rejection is not None:
        return None, rejection
    kind = GENERATION.get(path.rstrip("/"))
    if kind is None:
        return body, None
    return body, check_fields(kind, body, meta, admin)
