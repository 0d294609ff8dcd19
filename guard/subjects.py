"""Subjects to stop discussing: `--forget subjects:FILE` or `subjects:<data spec>`, no answers needed.

`subjects:<data spec>` (a spec of QA pairs: `subjects:tofu/forget01`, `subjects:synth/forget`,
`subjects:file:qa.jsonl`, ...) derives the subjects from the data when it is read: the people the
items are about (phrases.py `item_subjects`: each item's `person`, else the name asked about that
most items mention), by name alone. Nothing else of the data is kept: no answers, no descriptions.
A path that is an existing file is always read as a subjects file.

A subjects file is JSON lines or YAML (a list, or a mapping with a `subjects` list); each subject:

    name         required: the subject's name (a person, a work, an organisation)
    aliases      other names it goes by (each is a lexical probe of its own, so a subject with aliases
                 is in the always-on names check)
    description  optional: what the subject is (embedded for the classifier; its names, numbers and
                 key words are withheld from flagged replies, as a forget answer's are)
    documents    optional: texts about the subject (the same, each as its own item)

Unknown keys are refused; a subject without a name, and a file that is not UTF-8, are refused naming
the file and line; so is a file with no subjects. The policy
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
from ..data.sources import load_spec
from ..errors import ConfigError
from .phrases import item_subjects
from .policy import PolicyError

PREFIX = "subjects:"
DATA_PREFIXES = ("tofu/", "synth/", "muse/", "file:")   # `subjects:<data spec>`: the people a QA set is about


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
        data = path.read_bytes()
    except OSError as exc:
        raise PolicyError(f"subjects file {str(path)!r} cannot be read ({exc.strerror or exc})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise PolicyError(f"subjects file {str(path)!r}, line {line}: not UTF-8 text (byte 0x{data[exc.start]:02x} "
                          f"at offset {exc.start})") from None
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


def subjects_of(items: list[QA], where: str) -> list[Subject]:
    """The subjects a QA set is about (phrases.py `item_subjects`), in order of first appearance, by name
    only: nothing of the answers is kept."""
    people = list(dict.fromkeys(p for p in item_subjects(items) if p))
    if not people:
        raise PolicyError(f"{where}: no subject found (no multi-word name is asked about in two or more of its "
                          f"{len(items)} questions, and no item names its `person`); give a subjects file instead")
    return [Subject(p) for p in people]


def load_subjects(spec: str) -> list[Subject]:
    """The subjects of `subjects:FILE` or `subjects:<data spec>` (see the module docstring)."""
    if not is_subjects_spec(spec):
        raise PolicyError(f"{spec!r} is not a subjects spec (subjects:FILE or subjects:<data spec>)")
    rest = spec[len(PREFIX):]
    if not rest:
        raise PolicyError("subjects: name a subjects file or a data spec (subjects:tofu/forget01)")
    if Path(rest).is_file() or not rest.startswith(DATA_PREFIXES):
        return read_subjects(rest)
    return subjects_of(load_spec(rest), spec)
