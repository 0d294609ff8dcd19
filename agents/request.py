"""What the agent front reads from a request: every text the engine will render into the prompt.

The classifier must see what the model sees. For a chat request vLLM renders, per message, its
text parts (`text`, `input_text`, `output_text`, `refusal`, `thinking`, or plain strings), `name`,
`tool_calls` / `function_call` (their arguments), `reasoning` and a developer message's `tools`;
per request `tools`, `documents` and `chat_template_kwargs`; an assistant last message is a
prefill the model continues (`continue_final_message`). All of it is read here, whatever the role.
`tool_choice` and the output constraints (`structured_outputs`, `response_format`) are read too:
a `choice` list is text the model picks from. For a completion: `prompt` and `suffix`.

What the front cannot read is refused (`BadRequest`, HTTP 400 naming the field), never relayed
unclassified: image, audio, video, file or embedding parts, a text that is not a string, a message
field this module does not know.

The request-level rules (endpoints, fields, channels, size, depth, `vllm_xargs`) are
`guard/boundary.py`'s, checked before this runs; here are the front's own: the prompt must be
readable, `stream` a boolean, one choice (`n` 1) and no log-probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..guard.boundary import MESSAGE_FIELDS, ROLES
from ..guard.runtime import RequestArgs, parse_request_args
from .nodes import TEXT_PARTS

# request fields rendered into the prompt or choosing among texts, per endpoint (all read)
REQUEST_FIELDS = {"chat": ("tools", "documents", "chat_template_kwargs", "tool_choice", "structured_outputs",
                           "response_format"),
                  "completions": ("suffix", "structured_outputs", "response_format")}
# A rewrite is one answer and has no log-probabilities: asking for several choices or for
# log-probabilities is refused whatever the prompt, so the reply never tells which path answered.
LOGPROB_FIELDS = ("logprobs", "top_logprobs")


class BadRequest(ValueError):
    """A request the front refuses (HTTP 400); `field` names where the problem is."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Prompt:
    """What the classifier reads: the texts the engine renders, request-level ones first, then one
    per message, whatever its role (the last one is the last message: a prefill, say)."""

    messages: list[dict]          # as the client sent them (the rewriter answers them); a completion: one user message
    texts: tuple[str, ...]
    users: tuple[str, ...]        # the user messages' texts (a completion: its prompt)

    @property
    def whole(self) -> str:
        """Every rendered text: what the lexical test (names) reads."""
        return "\n".join(self.texts)

    def views(self) -> list[list[str]]:
        """The segment lists the semantic test scores (each list's last segment alone, and all of it
        joined): the user messages, as the guarded engine reads them, then every rendered text, so
        a system prompt, a tool result or a prefill counts too without diluting the first view."""
        users = [t for t in self.users if t.strip()]
        rendered = [t for t in self.texts if t.strip()]
        out = [users] if users else []
        if rendered and rendered != users:
            out.append(rendered)
        return out or [[self.whole]]


@dataclass(frozen=True)
class FrontRequest:
    kind: str                     # chat | completions
    body: dict
    prompt: Prompt
    stream: bool
    args: RequestArgs             # the `unlearn_*` arguments (boundary.py checked them)

    @property
    def tightened(self) -> bool:
        """Whether the request itself asked for more guarding than the classifier's default."""
        return bool(self.args.force or self.args.targets or self.args.threshold is not None)


def read_request(kind: str, body: dict, meta: dict) -> FrontRequest:
    """The request as the front uses it; BadRequest when it cannot be read or breaks a front rule."""
    prompt = read_completion(body) if kind == "completions" else read_chat(body)
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise BadRequest("stream", "'stream' must be true or false")
    n = body.get("n", 1)
    if n not in (None, 1) or isinstance(n, bool):
        raise BadRequest("n", "the agent front answers one choice per request: 'n' must be 1")
    for name in LOGPROB_FIELDS:
        if body.get(name) not in (None, False, 0) or (name == "logprobs" and kind == "completions"
                                                      and body.get(name) is not None):
            raise BadRequest(name, f"'{name}': the agent front returns no log-probabilities")
    return FrontRequest(kind, body, prompt, stream, parse_request_args(body.get("vllm_xargs"), meta))


def read_completion(body: dict) -> Prompt:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise BadRequest("prompt", "'prompt' must be a string (token-id or batched prompts are not accepted by the "
                                   "agent front: it must read the prompt to classify it)")
    extra = request_texts(body, "completions")
    return Prompt([{"role": "user", "content": prompt}], tuple(extra + [prompt]), (prompt,))


def read_chat(body: dict) -> Prompt:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages", "'messages' must be a non-empty list")
    texts = [message_text(n, m) for n, m in enumerate(messages)]
    users = tuple(t for m, t in zip(messages, texts) if m["role"] == "user")
    return Prompt(messages, tuple(request_texts(body, "chat") + texts), users)


def request_texts(body: dict, kind: str) -> list[str]:
    """The request-level texts (tool definitions, documents, template arguments, choices), one per field."""
    out = []
    for name in REQUEST_FIELDS[kind]:
        text = "\n".join(strings(body.get(name)))
        if text:
            out.append(text)
    return out


def message_text(n: int, message: Any) -> str:
    """Everything of messages[n] a chat template may render, as one text; BadRequest when unreadable."""
    where = f"messages[{n}]"
    if not isinstance(message, dict):
        raise BadRequest(where, f"{where} must be an object with a 'role'")
    role = message.get("role")
    if not isinstance(role, str) or role not in ROLES:
        raise BadRequest(f"{where}.role", f"{where}.role must be one of {list(ROLES)}")
    unknown = sorted(str(k)[:40] for k in message if k not in ("role", "content") + MESSAGE_FIELDS)
    if unknown:
        raise BadRequest(f"{where}.{unknown[0]}", f"{where}: field(s) {unknown} are not read by the agent front; "
                                                  f"accepted: {['role', 'content', *MESSAGE_FIELDS]}")
    name = message.get("name")
    if name is not None and not isinstance(name, str):
        raise BadRequest(f"{where}.name", f"{where}.name must be a string")
    texts = [content_text(f"{where}.content", message.get("content"))]
    texts += [s for field in MESSAGE_FIELDS for s in strings(message.get(field))]
    return "\n".join(t for t in texts if t)


def content_text(where: str, content: Any) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    if not isinstance(content, list):
        raise BadRequest(where, f"{where} must be a string or a list of content parts")
    return "\n".join(part_text(f"{where}[{i}]", part) for i, part in enumerate(content))


def part_text(where: str, part: Any) -> str:
    """A text content part's text; BadRequest for any part the front cannot read (the model would see
    an image, a sound, a file or embeddings the classifier never did)."""
    if isinstance(part, str):
        return part
    if not isinstance(part, dict):
        raise BadRequest(where, f"{where} must be a string or a content part object")
    kind = part.get("type")
    key = TEXT_PARTS.get(kind) if isinstance(kind, str) else None
    if key is None:
        shown = kind if isinstance(kind, str) else type(kind).__name__
        raise BadRequest(f"{where}.type", f"{where}: content parts of type {str(shown)[:40]!r} cannot be read by the "
                                          f"agent front's classifier; only text parts {sorted(TEXT_PARTS)} are accepted")
    extra = sorted(str(k)[:40] for k in part if k not in ("type", key))
    if extra:   # vLLM reads a part with e.g. a `uuid` as media, whatever its type
        raise BadRequest(f"{where}.{extra[0]}", f"{where}: a {kind!r} part has only 'type' and {key!r}; got {extra}")
    text = part.get(key)
    if not isinstance(text, str):
        raise BadRequest(f"{where}.{key}", f"{where}.{key} must be a string")
    return text


def strings(value: Any) -> list[str]:
    """Every string in a decoded JSON value, object keys too (a template rendering it as JSON shows
    them); depth and size are bounded by boundary.py before this runs."""
    out, stack = [], [value]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            out.append(node)
        elif isinstance(node, dict):
            stack.extend(reversed([x for k, v in node.items() for x in (k, v)]))
        elif isinstance(node, list):
            stack.extend(reversed(node))
    return out
