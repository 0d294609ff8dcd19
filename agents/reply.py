"""What a client of the agent front reads back: one reply shape, whichever path answered.

A relayed answer (the backend's) and a rewritten one (the agent graph's) are written by the same
`Reply`: the same fields, an id of the same form, `finish_reason` "stop" or "length" by the same
rule (a rewrite longer than the client's `max_tokens` is cut there, as the engine would), usage
counted by the backend's tokenizer for both, and stream events of the same shape. Nothing in the
body, the headers or the stream tells a client which path answered; operators see it in the log,
in GET /admin/stats, and in the diagnostics that requests carrying the admin token get
(`x-unlearn-path` / `x-unlearn-reason` / `x-unlearn-route` headers and the `unlearn` object).
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Optional

STREAM_CHUNK_WORDS = 4


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    def to_json(self) -> dict:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens}

    @classmethod
    def from_backend(cls, usage) -> Optional["Usage"]:
        """The backend's usage object, when it has one."""
        if not isinstance(usage, dict):
            return None
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if not isinstance(prompt, int) or not isinstance(completion, int):
            return None
        return cls(prompt, completion)


@dataclass(frozen=True)
class Answer:
    """One choice's text and why it ended (stop | length)."""

    text: str
    finish: str = "stop"


def choice_text(choice: dict, kind: str) -> str:
    """The text of one backend choice (chat message content or completion text; "" when absent)."""
    if kind == "chat":
        message = choice.get("message") or choice.get("delta") or {}
        text = message.get("content") if isinstance(message, dict) else None
    else:
        text = choice.get("text")
    return text if isinstance(text, str) else ""


def backend_answers(data: dict, kind: str) -> list[Answer]:
    """The choices of a backend's whole answer, in index order."""
    choices = sorted((c for c in data.get("choices") or [] if isinstance(c, dict)), key=lambda c: c.get("index", 0))
    return [Answer(choice_text(c, kind), "length" if c.get("finish_reason") == "length" else "stop") for c in choices]


def answer_chunks(answer: str) -> list[str]:
    """The answer in pieces of STREAM_CHUNK_WORDS words, each but the first led by its space."""
    words = answer.split(" ")
    chunks = []
    for start in range(0, len(words), STREAM_CHUNK_WORDS):
        text = " ".join(words[start:start + STREAM_CHUNK_WORDS])
        chunks.append(text if start == 0 else " " + text)
    return chunks


@dataclass(frozen=True)
class Reply:
    """One response to one request: its id, creation time and model, and how it is written (whole,
    or as stream events)."""

    kind: str              # chat | completions
    rid: str
    created: int
    model: str
    include_usage: bool    # a stream's last event carries usage (stream_options.include_usage)

    @classmethod
    def for_request(cls, kind: str, body: dict, model_name: str) -> "Reply":
        """The reply to a request: a fresh id, now, the model the client named (else `model_name`)."""
        model = body.get("model")
        options = body.get("stream_options")
        prefix = "chatcmpl" if kind == "chat" else "cmpl"
        return cls(kind, f"{prefix}-{uuid.uuid4().hex}", int(time.time()),
                   model if isinstance(model, str) and model else model_name,
                   isinstance(options, dict) and options.get("include_usage") is True)

    def completion(self, answers: list[Answer], usage: Optional[Usage]) -> dict:
        """The whole response's body."""
        if self.kind == "chat":
            choices = [{"index": i, "message": {"role": "assistant", "content": a.text}, "finish_reason": a.finish}
                       for i, a in enumerate(answers)]
        else:
            choices = [{"index": i, "text": a.text, "finish_reason": a.finish} for i, a in enumerate(answers)]
        body = {"id": self.rid, "object": "chat.completion" if self.kind == "chat" else "text_completion",
                "created": self.created, "model": self.model, "choices": choices}
        if usage is not None:
            body["usage"] = usage.to_json()
        return body

    def event(self, choices: list, usage: Optional[Usage] = None) -> bytes:
        """One server-sent event of the stream."""
        data = {"id": self.rid, "object": "chat.completion.chunk" if self.kind == "chat" else "text_completion",
                "created": self.created, "model": self.model, "choices": choices}
        if usage is not None and self.include_usage:
            data["usage"] = usage.to_json()
        return f"data: {json.dumps(data)}\n\n".encode()

    def piece(self, text: Optional[str], finish: Optional[str] = None, role: bool = False) -> dict:
        """The one choice of a stream event: a chat delta, or a completion's text."""
        if self.kind == "chat":
            delta = {"role": "assistant", "content": ""} if role else ({"content": text} if text is not None else {})
            return {"index": 0, "delta": delta, "finish_reason": finish}
        return {"index": 0, "text": text or "", "finish_reason": finish}

    def opening(self) -> bytes:
        """The first event (chat: the role), sent before any text, whichever path answers."""
        return self.event([self.piece(None, role=True)]) if self.kind == "chat" else b""

    def closing(self, finish: str, usage: Optional[Usage]) -> bytes:
        """The finish event, then the end of the stream."""
        return self.event([self.piece(None if self.kind == "chat" else "", finish)], usage) + b"data: [DONE]\n\n"


class WordChunker:
    """Text arriving in pieces, cut into the chunks `answer_chunks` cuts the whole text into."""

    def __init__(self):
        self.words: list[str] = [""]   # the last one may still grow
        self.sent = 0                  # words already sent

    def feed(self, text: str) -> list[str]:
        """The chunks that `text` completes (a chunk is complete once the word after it begins)."""
        parts = text.split(" ")
        self.words[-1] += parts[0]
        self.words.extend(parts[1:])
        out = []
        while len(self.words) - self.sent > STREAM_CHUNK_WORDS:
            out.append(self._chunk(self.sent + STREAM_CHUNK_WORDS))
        return out

    def rest(self) -> list[str]:
        """The last chunk (once the text has ended), if any text is left."""
        return [self._chunk(len(self.words))] if self.sent < len(self.words) else []

    def _chunk(self, end: int) -> str:
        text = " ".join(self.words[self.sent:end])
        text = text if self.sent == 0 else " " + text
        self.sent = end
        return text


async def sse_events(upstream):
    """The JSON objects of a server-sent event stream (`data: {...}` lines; [DONE] and others skipped)."""
    async for line in upstream.aiter_lines():
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        try:
            data = json.loads(line[6:])
        except ValueError:
            continue
        if isinstance(data, dict):
            yield data
