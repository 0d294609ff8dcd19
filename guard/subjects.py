"""Subjects to stop discussing: `--forget subjects:FILE`, no answers needed.

A subjects file is JSON lines or YAML (a list, or a mapping with a `subjects` list); each subject:

    name         required: the subject's name (a person, a work, an organisation)
    aliases      other names it goes by (each is a lexical probe of its own, so a subject with aliases
                 is in the always-on names check)
    description  optional: what the subject is (embedded for the classifier; its names, numbers and
                 key words are withheld from flagged replies, as a forget answer's are)
    documents    optional: texts about the subject (the same, each as its own item)

Unknown keys are refused, a subject without a name is refused naming the file and line. The policy
is built by guard/build.py as from QA pairs, with the targets given (the names and aliases) instead
of found among recurring names: items are "Tell me about <name>." with the description (or the name)
as its answer, and each description and document as raw text, all owned by their subject.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..config import from_dict
from ..data.records import QA
from ..errors import ConfigError
from .policy import PolicyError

PREFIX = "subjects:"


@dataclass
class Subject:
    name: str
    aliases: list[str] = field(default_factory=list)
    description: Optional[str] = None
    documents: list[str] = field(default_factory=list)

    def validate(self) -> None:
        if not self.name.strip():
            raise ConfigError("a subject needs a non-empty 'name'")
        self.name = self.name.strip()
        self.aliases = [a.strip() for a in self.aliases if a.strip() and a.strip() != self.name]


def is_subjects_spec(spec: str) -> bool:
    return isinstance(spec, str) and spec.startswith(PREFIX)


def _entries(path: Path, text: str) -> list[tuple[int, object]]:
    """(line, raw entry) of a JSON-lines or YAML subjects file."""
    if path.suffix in (".jsonl", ".json") or text.lstrip().startswith("{"):
        out = []
        for line, row in enumerate(text.splitlines(), 1):
            if row.strip():
                try:
                    out.append((line, json.loads(row)))
                except json.JSONDecodeError as exc:
                    raise PolicyError(f"{path}:{line}: not valid JSON ({exc.msg})") from None
        return out
    import yaml

    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PolicyError(f"{path}: not valid YAML ({exc})") from None
    if isinstance(data, dict) and set(data) == {"subjects"}:
        data = data["subjects"]
        root = next(v for k, v in root.value if k.value == "subjects")
    if not isinstance(data, list):
        raise PolicyError(f"{path}: expected a list of subjects (or a mapping with a 'subjects' list)")
    return [(node.start_mark.line + 1, entry) for node, entry in zip(root.value, data)]


def read_subjects(path: str | Path) -> list[Subject]:
    """The subjects of a file (see the module docstring); refused with file and line where they are bad."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"subjects file {str(path)!r} cannot be read ({exc})") from None
    out = []
    for line, entry in _entries(path, text):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"].strip():
            raise PolicyError(f"{path}:{line}: a subject needs a 'name' (got {str(entry)[:80]!r})")
        try:
            out.append(from_dict(Subject, entry, f"{path}:{line}"))
        except ConfigError as exc:
            raise PolicyError(str(exc)) from None
    if not out:
        raise PolicyError(f"subjects file {str(path)!r} has no subjects")
    return out


def subject_items(subjects: list[Subject]) -> tuple[list[QA], list[int]]:
    """The forget items of `subjects` and, per item, the subject that owns it."""
    items, owners = [], []
    for s, subject in enumerate(subjects):
        made = [QA(f"Tell me about {subject.name}.", subject.description or subject.name)]
        made += [QA(None, text) for text in [subject.description, *subject.documents] if text and text.strip()]
        items += made
        owners += [s] * len(made)
    return items, owners
