"""MUSE corpora as their authors ship them, and MUSE-mini, the CPU-sized protocol cut from MUSE-News.

A MUSE directory (the authors' `data/<corpus>/`, e.g. ../shared/data/muse-news) holds

    verbmem/forget.json            [{prompt, gt}]        verbatim memorisation (C1)
    knowmem/forget_qa.json         [{question, answer}]  knowledge memorisation (C2), + forget_qa_icl.json
    knowmem/retain2_qa.json        [{question, answer}]  utility (C4), + retain2_qa_icl.json
                                                         (retain_qa[_icl].json in the HF copy)
    privleak/forget.json           [text]                privacy leakage (C3): members ...
    privleak/holdout.json          [text]                ... against never-seen texts
    privleak/retain2.json          [text]                retain texts (retain.json in the HF copy)
    raw/forget.txt                 the forget corpus (MUSE-mini's training text; optional for `muse`)

MUSE-mini (`muse/mini/<part>` specs, `muse-mini` benchmark): the forget slice is the raw forget
passages (blank-line paragraphs packed into <= PASSAGE_CHARS characters) that answer the first
MINI_FORGET_QUESTIONS knowmem forget questions the raw corpus answers; the retain slice is the
privleak/retain2 passages that answer the knowmem retain questions. A passage *answers* a question
when it holds the answer (whole words, any case) and at least half of the question's content words
(a bare "2005" found anywhere would pick up passages about something else). The knowmem sets are
every question the slice answers; verbmem items are the forget passages cut in two at a word
boundary; privleak compares the forget passages (members) with as many holdout passages (spread over
the file, none shorter than half the shortest member).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..errors import DataError
from .records import QA

MUSE_DIR_ENV = "UNLEARN_MUSE_DIR"
DEFAULT_MUSE_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "muse-news"


@dataclass(frozen=True)
class MuseSplit:
    name: str                 # the task / record-set name
    paths: tuple[str, ...]    # accepted file names, relative to the directory; the first is MUSE-News's
    fmt: str                  # verbmem | qa | text | raw


MUSE_SPLITS = (
    MuseSplit("verbmem_forget", ("verbmem/forget.json",), "verbmem"),
    MuseSplit("knowmem_forget", ("knowmem/forget_qa.json",), "qa"),
    MuseSplit("knowmem_forget_icl", ("knowmem/forget_qa_icl.json",), "qa"),
    MuseSplit("knowmem_retain", ("knowmem/retain2_qa.json", "knowmem/retain_qa.json"), "qa"),
    MuseSplit("knowmem_retain_icl", ("knowmem/retain2_qa_icl.json", "knowmem/retain_qa_icl.json"), "qa"),
    MuseSplit("privleak_forget", ("privleak/forget.json",), "text"),
    MuseSplit("privleak_holdout", ("privleak/holdout.json",), "text"),
    MuseSplit("privleak_retain", ("privleak/retain2.json", "privleak/retain.json"), "text"),
)
RAW_FORGET = MuseSplit("raw_forget", ("raw/forget.txt",), "raw")
SPLITS_BY_NAME = {s.name: s for s in (*MUSE_SPLITS, RAW_FORGET)}

PASSAGE_CHARS = 1000          # ~220 SmolLM2 tokens: a passage fits a 256-token training sequence
MINI_FORGET_QUESTIONS = 32    # knowmem forget questions whose passages make the forget slice
MINI_PARTS = ("train", "guard", "forget_text", "retain_text", "knowmem_forget", "knowmem_retain", "verbmem",
              "privleak_forget", "privleak_holdout")


def muse_root() -> Path:
    """$UNLEARN_MUSE_DIR, else ../shared/data/muse-news next to the repository."""
    return Path(os.environ.get(MUSE_DIR_ENV) or DEFAULT_MUSE_DIR)


# ----------------------------------------------------------------------------- the directory
def _describe_found(root: Path) -> str:
    found = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    return ", ".join(found[:30]) + (f" (+{len(found) - 30} more)" if len(found) > 30 else "") if found else "no files"


def split_files(root: str | Path, need_raw: bool = False) -> dict[str, Path]:
    """{split name: file} for a MUSE directory; a missing split is refused with every missing file
    named (with its accepted spellings) and what the directory holds."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"MUSE directory {str(root)!r} does not exist (set {MUSE_DIR_ENV} or muse_dir)")
    wanted = (*MUSE_SPLITS, RAW_FORGET) if need_raw else MUSE_SPLITS
    files, missing = {}, []
    for split in wanted:
        path = next((root / p for p in split.paths if (root / p).is_file()), None)
        if path is None:
            missing.append(" or ".join(split.paths))
        else:
            files[split.name] = path
    if missing:
        raise DataError(f"MUSE directory {str(root)!r} is missing {len(missing)} split(s): {'; '.join(missing)}. "
                        f"Found: {_describe_found(root)}")
    return files


def _read_json_list(path: Path) -> list:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None
    if isinstance(data, dict) and len(data) == 1 and isinstance(next(iter(data.values())), list):
        data = next(iter(data.values()))
    if not isinstance(data, list) or not data:
        raise DataError(f"{path}: expected a non-empty JSON list")
    return data


def read_split(path: Path, fmt: str) -> list[QA]:
    """One MUSE file as records: verbmem QA(prompt, gt), knowmem QA(question, answer), privleak
    QA(None, text), raw text QA(None, passage) per passage."""
    if fmt == "raw":
        passages = split_passages(path.read_text(encoding="utf-8"))
        if not passages:
            raise DataError(f"{path}: no text")
        return [QA(None, p) for p in passages]
    keys = {"verbmem": ("prompt", "gt"), "qa": ("question", "answer")}.get(fmt)
    out = []
    for i, obj in enumerate(_read_json_list(path)):
        if keys is None:
            text = obj if isinstance(obj, str) else obj.get("text") if isinstance(obj, dict) else None
            if not isinstance(text, str) or not text:
                raise DataError(f"{path}[{i}]: expected a string or an object with 'text'")
            out.append(QA(None, text))
        else:
            q, a = keys
            if not isinstance(obj, dict) or not isinstance(obj.get(q), str) or not isinstance(obj.get(a), str):
                raise DataError(f"{path}[{i}]: expected an object with string '{q}' and '{a}'")
            out.append(QA(obj[q], obj[a]))
    return out


def load_muse(root: str | Path, need_raw: bool = False) -> dict[str, list[QA]]:
    """Every split of a MUSE directory (see the module docstring), by split name."""
    files = split_files(root, need_raw)
    return {name: read_split(path, SPLITS_BY_NAME[name].fmt) for name, path in files.items()}



# ----------------------------------------------------------------------------- passages and answers
def _pieces(paragraph: str, max_chars: int) -> list[str]:
    """A paragraph longer than max_chars cut between sentences (a longer sentence at a space)."""
    if len(paragraph) <= max_chars:
        return [paragraph] if paragraph else []
    out, current = [], ""
    for sentence in re.split(r"(?<=[.!?])\s+", paragraph):
        while len(sentence) > max_chars:
            at = sentence.rfind(" ", 0, max_chars)
            at = at if at > 0 else max_chars
            out, current = out + ([current] if current else []) + [sentence[:at]], ""
            sentence = sentence[at:].lstrip()
        if current and len(current) + 1 + len(sentence) > max_chars:
            out.append(current)
            current = sentence
        else:
            current = f"{current} {sentence}" if current else sentence
    return out + ([current] if current else [])


def split_passages(text: str, max_chars: int = PASSAGE_CHARS) -> list[str]:
    """Blank-line paragraphs packed, in order, into passages of at most `max_chars` characters
    (a longer paragraph is cut between sentences first)."""
    passages, current = [], ""
    for para in (piece for p in text.split("\n\n") for piece in _pieces(p.strip(), max_chars)):
        if current and len(current) + 2 + len(para) > max_chars:
            passages.append(current)
            current = para
        else:
            current = f"{current}\n\n{para}" if current else para
    if current:
        passages.append(current)
    return passages


_STOPWORDS = frozenset(
    "what which who whom whose when where why how does did done was were been being have has had with from into "
    "that this these those than then there their they them about after before over under according article "
    "excerpt said says year years many much some more most also only other such each your will would could "
    "should".split())


def content_words(question: str) -> list[str]:
    """The question's words of 4+ letters that are not function words, lower-cased, in order, once."""
    words = [w.lower() for w in re.findall(r"[A-Za-z][A-Za-z'\-]{3,}", question)]
    return list(dict.fromkeys(w for w in words if w not in _STOPWORDS))


def answers(passage: str, qa: QA) -> bool:
    """The passage holds the answer (whole words, any case) and at least half the question's content words."""
    if qa.answer.strip().lower() not in passage.lower():      # the cheap test first (3,569 raw passages)
        return False
    if not re.search(r"(?<!\w)" + re.escape(qa.answer.strip()) + r"(?!\w)", passage, re.IGNORECASE):
        return False
    words = content_words(qa.question or "")
    low = passage.lower()
    return sum(w in low for w in words) * 2 >= len(words)


def answering_passage(qa: QA, passages: list[str]) -> Optional[int]:
    return next((i for i, p in enumerate(passages) if answers(p, qa)), None)


def answered(questions: list[QA], passages: list[str]) -> list[QA]:
    """The questions some passage answers, in their file order."""
    return [q for q in questions if any(answers(p, q) for p in passages)]


def verbmem_item(passage: str) -> QA:
    """MUSE's verbmem format from one passage: the first half of its words as the prompt, the rest as gt."""
    cut = [m.start() for m in re.finditer(r"\s+", passage)]
    at = cut[len(cut) // 2] if cut else len(passage) // 2
    return QA(passage[:at], passage[at:].lstrip())


def spread(items: list, n: int) -> list:
    """n items evenly spaced over the list (all of it when n >= its length)."""
    if n >= len(items):
        return list(items)
    return [items[int(i * len(items) / n)] for i in range(n)]


# ----------------------------------------------------------------------------- MUSE-mini
@dataclass
class MuseMini:
    forget_text: list[QA]        # the forget slice: raw forget passages (training text)
    retain_text: list[QA]        # the retain slice: privleak/retain2 passages
    knowmem_forget: list[QA]
    knowmem_retain: list[QA]
    knowmem_forget_icl: list[QA]
    knowmem_retain_icl: list[QA]
    verbmem: list[QA]            # QA(prompt, gt) cut from the forget passages
    privleak_forget: list[QA]    # the forget passages (members of the target's training set)
    privleak_holdout: list[QA]   # as many holdout passages (never trained on), spread over the file

    def part(self, name: str) -> list[QA]:
        if name == "train":      # the target's training text
            return self.forget_text + self.retain_text
        # the forget questions and the slice itself: a guard built from it has seen the questions knowmem
        # forget scores (configs/compare/muse-mini.yaml builds its guard from forget_text, as a corpus)
        if name == "guard":
            return self.knowmem_forget + self.forget_text
        if name not in MINI_PARTS:
            raise DataError(f"unknown MUSE-mini part {name!r}; valid parts: {list(MINI_PARTS)}")
        return getattr(self, name)


def _slice(questions: list[QA], passages: list[str], n_questions: Optional[int]) -> list[str]:
    """The passages answering the first n_questions questions that some passage answers, in corpus order."""
    picked: list[int] = []
    n_answered = 0
    for q in questions:
        if n_questions is not None and n_answered >= n_questions:
            break
        i = answering_passage(q, passages)
        if i is not None:
            n_answered += 1
            picked.append(i)
    return [passages[i] for i in sorted(set(picked))]


def build_mini(splits: dict[str, list[QA]], n_forget_questions: int = MINI_FORGET_QUESTIONS) -> MuseMini:
    """MUSE-mini from a loaded MUSE directory (with raw/forget.txt); see the module docstring."""
    raw = [r.answer for r in splits["raw_forget"]]
    forget = _slice(splits["knowmem_forget"], raw, n_forget_questions)
    retain_passages = [p for r in splits["privleak_retain"] for p in split_passages(r.answer)]
    retain = _slice(splits["knowmem_retain"], retain_passages, None)
    if not forget or not retain:
        raise DataError("MUSE-mini: no raw forget passage answers a knowmem forget question"
                        if not forget else "MUSE-mini: no privleak retain passage answers a knowmem retain question")
    # non-members of about the members' length (Min-K% varies with length): no stub shorter than half the shortest
    floor = min(len(p) for p in forget) // 2
    holdout = [p for r in splits["privleak_holdout"] for p in split_passages(r.answer) if len(p) >= floor]
    if not holdout:
        raise DataError(f"MUSE-mini: no privleak holdout passage has {floor} characters (half the shortest forget "
                        "passage); privacy leakage needs non-members like the members")
    return MuseMini(
        forget_text=[QA(None, p) for p in forget],
        retain_text=[QA(None, p) for p in retain],
        knowmem_forget=answered(splits["knowmem_forget"], forget),
        knowmem_retain=answered(splits["knowmem_retain"], retain),
        knowmem_forget_icl=splits["knowmem_forget_icl"],
        knowmem_retain_icl=splits["knowmem_retain_icl"],
        verbmem=[verbmem_item(p) for p in forget],
        privleak_forget=[QA(None, p) for p in forget],
        privleak_holdout=[QA(None, p) for p in spread(holdout, len(forget))],
    )


_MINI_CACHE: dict[str, MuseMini] = {}


def load_mini(root: str | Path | None = None) -> MuseMini:
    """MUSE-mini of a MUSE directory (default: muse_root()), built once per process."""
    root = Path(root) if root is not None else muse_root()
    key = str(root.resolve())
    if key not in _MINI_CACHE:
        _MINI_CACHE[key] = build_mini(load_muse(root, need_raw=True))
    return _MINI_CACHE[key]


def load_muse_spec(spec: str) -> list[QA]:
    """`muse/<split>` (a split of muse_root(), e.g. muse/knowmem_forget, muse/raw_forget as passages)
    or `muse/mini/<part>` (MUSE-mini: train, guard, forget_text, retain_text, knowmem_forget, ...)."""
    rest = spec.removeprefix("muse/")
    if rest.startswith("mini/"):
        return load_mini().part(rest[5:])
    if rest not in SPLITS_BY_NAME:
        raise DataError(f"unknown MUSE spec {spec!r}; valid: muse/<split> for split in {sorted(SPLITS_BY_NAME)}, "
                        f"or muse/mini/<part> for part in {list(MINI_PARTS)}")
    split = SPLITS_BY_NAME[rest]
    files = split_files(muse_root(), need_raw=split is RAW_FORGET)
    return read_split(files[rest], split.fmt)
