"""The pure parts of the nodes: prompt building, reply parsing and the composer's choice.

Kept free of I/O so each rule is testable on its own; `graph.py` wires them to the model.
"""

from __future__ import annotations

import re
from statistics import mean
from typing import Optional, Sequence

_SCORE = re.compile(r"(?<!\d)(?<!\d\.)([1-5])(?!\d|\.\d)")
_VERDICT = re.compile(r"\b(yes|no)\b", re.IGNORECASE)
_ECHO = re.compile(r"^\s*(rewritten answer|merged answer|answer)\s*:\s*", re.IGNORECASE)


def format_facts(facts: Sequence) -> str:
    return "\n".join(f"{n}. {f.text}" for n, f in enumerate(facts, 1)) or "(none)"


def format_variants(variants: Sequence[str]) -> str:
    return "\n".join(f"{n}. {v}" for n, v in enumerate(variants, 1))


def last_user_message(messages: Sequence[dict]) -> str:
    for m in reversed(messages):
        if m.get("role") == "user":
            return message_text(m)
    return ""


# the text content parts a chat template renders, and the key holding each one's text (vLLM's)
TEXT_PARTS = {"text": "text", "input_text": "text", "output_text": "text", "refusal": "refusal", "thinking": "thinking"}


def message_text(message: dict) -> str:
    """A message's text: a string content, or the text parts (and plain strings) of a list content."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(t for t in map(_part_text, content) if t)
    return ""


def _part_text(part) -> str:
    if isinstance(part, str):
        return part
    kind = part.get("type") if isinstance(part, dict) else None
    text = part.get(TEXT_PARTS[kind]) if isinstance(kind, str) and kind in TEXT_PARTS else None
    return text if isinstance(text, str) else ""


def parse_verdict(text: str) -> Optional[bool]:
    """The audit's YES (leaks) / NO (clean), from its first yes/no word; None when it gave neither."""
    match = _VERDICT.search(text or "")
    return None if match is None else match.group(1).lower() == "yes"


def parse_score(text: str) -> Optional[int]:
    """The critic's score: the first stand-alone digit 1-5 ("4", "Score: 4/5"); None when there is none."""
    match = _SCORE.search(text or "")
    return None if match is None else int(match.group(1))


def clean_rewrite(text: str) -> str:
    """A rewrite without an echoed label or the prompt's quote markers; "" when nothing is left."""
    text = (text or "").strip().replace("<<<", "").replace(">>>", "").strip()
    return _ECHO.sub("", text).strip()


def choose(scores: Sequence[Optional[int]], j: int, threshold: float) -> tuple[list[int], float, bool]:
    """The composer's rule: the j best-scored variants (a malformed score counts as 1, the worst),
    their mean score, and whether that mean is below the threshold (refuse)."""
    ranked = sorted(range(len(scores)), key=lambda i: (-(scores[i] or 1), i))[:j]
    if not ranked:
        return [], 0.0, True
    avg = mean((scores[i] or 1) for i in ranked)
    return ranked, avg, avg < threshold
