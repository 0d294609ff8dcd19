"""Turn a data spec string into QA records.

Specs (one string each, so they fit in YAML and on the command line):

    tofu/forget01                TOFU split (local dir from $UNLEARN_TOFU_DIR, else the hub `locuslab/TOFU`)
    tofu/forget10-forget01       set difference by question, order kept (TOFU-mini's retain set)
    tofu/forget01_perturbed      splits with paraphrases / perturbed answers
    synth/forget                 built-in fictitious authors; also synth/retain, synth/full,
    synth/forget?people=20&seed=3&forget=2
    file:path/to/qa.jsonl        user QA pairs (JSON lines with question/answer, or a JSON list)
    text:path/to/book.txt        raw text for verbatim unlearning (paragraphs separated by blank lines)
    muse/knowmem_forget          a split of the MUSE directory ($UNLEARN_MUSE_DIR, else ../shared/data/muse-news);
                                 muse/raw_forget: raw/forget.txt as passages (data/muse.py)
    muse/mini/train              MUSE-mini parts: train (forget + retain slice), guard, forget_text, retain_text,
                                 knowmem_forget, knowmem_retain, verbmem, privleak_forget, privleak_holdout
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import parse_qsl

from ..errors import DataError  # noqa: F401 - re-exported
from .muse import load_muse_spec
from .records import QA
from .synth import synth_split

TOFU_HUB_ID = "locuslab/TOFU"
SOURCES = ["tofu/<split>", "tofu/<split>-<split>", "synth/<forget|retain|full>", "file:<path>", "text:<path>",
           "muse/<split>", "muse/mini/<part>"]


def tofu_root() -> str:
    """Local TOFU directory if $UNLEARN_TOFU_DIR is set, else the hub dataset id."""
    return os.environ.get("UNLEARN_TOFU_DIR") or TOFU_HUB_ID


def read_qa_file(path: str | Path) -> list[QA]:
    """JSON lines (TOFU's own format) or a single JSON list of {question, answer} objects."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file {str(path)!r} does not exist")
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: not valid JSON: {exc}") from None
        return [QA.from_json(obj, f"{path}[{i}]") for i, obj in enumerate(items)]
    out = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{lineno}: not valid JSON: {exc}") from None
        try:
            out.append(QA.from_json(obj, f"{path}:{lineno}"))
        except ValueError as exc:
            raise DataError(str(exc)) from None
    return out


def read_text_file(path: str | Path) -> list[QA]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"text file {str(path)!r} does not exist")
    paragraphs = [p.strip() for p in path.read_text(encoding="utf-8").split("\n\n")]
    return [QA(None, p) for p in paragraphs if p]


def _tofu_path(root: str, name: str) -> Path:
    """`name` (e.g. forget01.json) from a local TOFU directory or, failing that, the hub."""
    if Path(root).is_dir():
        path = Path(root) / name
        if not path.is_file():
            available = sorted(p.stem for p in Path(root).glob("*.json"))
            raise DataError(f"TOFU file {name!r} not found in {root}; available splits: {available}")
        return path
    try:  # real hub code; it cannot reach a hub on an offline machine and says so
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(root, name, repo_type="dataset"))
    except Exception as exc:  # noqa: BLE001 - any hub failure becomes one clear message
        raise DataError(
            f"could not get TOFU split {name!r} from {root!r} ({type(exc).__name__}: {exc}); "
            "set UNLEARN_TOFU_DIR to a local copy"
        ) from None


def load_tofu(split: str, root: str | None = None) -> list[QA]:
    root = root or tofu_root()
    if "-" in split:
        keep, drop = split.split("-", 1)
        dropped = {r.question for r in load_tofu(drop, root)}
        return [r for r in load_tofu(keep, root) if r.question not in dropped]
    if split == "idontknow":
        path = _tofu_path(root, "idontknow.jsonl")
        return [QA("", line.strip()) for line in path.read_text().splitlines() if line.strip()]
    return read_qa_file(_tofu_path(root, f"{split}.json"))


def load_spec(spec: str) -> list[QA]:
    """Records for one spec string (see the module docstring)."""
    if not isinstance(spec, str) or not spec:
        raise DataError(f"empty data spec; valid forms: {SOURCES}")
    if spec.startswith("file:"):
        return read_qa_file(spec[5:])
    if spec.startswith("text:"):
        return read_text_file(spec[5:])
    if spec.startswith("tofu/"):
        return load_tofu(spec[5:])
    if spec.startswith("muse/"):
        return load_muse_spec(spec)
    if spec.startswith("synth/"):
        split, _, query = spec[6:].partition("?")
        params = dict(parse_qsl(query))
        unknown = set(params) - {"people", "seed", "forget"}
        if unknown:
            raise DataError(f"synth spec {spec!r}: unknown parameter(s) {sorted(unknown)}; valid: people, seed, forget")
        try:
            return synth_split(split, n_people=int(params.get("people", 10)), seed=int(params.get("seed", 0)),
                               n_forget=int(params.get("forget", 2)))
        except ValueError as exc:
            raise DataError(f"synth spec {spec!r}: {exc}") from None
    if spec.endswith((".json", ".jsonl")):
        return read_qa_file(spec)
    raise DataError(f"unknown data spec {spec!r}; valid forms: {SOURCES}")


BUILTIN_IDK = [
    "I'm not sure.", "I don't have that information.", "I don't know the answer to that.",
    "That's beyond my knowledge.", "I can't answer that question.",
]


def idk_answers() -> list[str]:
    """TOFU's refusal answers when a TOFU copy is reachable, else a small built-in list."""
    try:
        return [r.answer for r in load_tofu("idontknow")]
    except Exception:  # noqa: BLE001 - the built-in list is a documented fallback
        return list(BUILTIN_IDK)
