"""Benchmarks = named lists of evaluation tasks built from data specs. One registry: BENCHMARKS.

Task kinds:
    qa       TOFU-style question/answer set: probability of the answer, ROUGE of the greedy answer,
             truth ratio when paraphrased/perturbed answers exist, EM / ES; a forget task with
             paraphrased questions also reports ROUGE on those
    options  real authors / world facts: the answer is one of several options (probability
             normalised over them); the truth ratio compares the answer with the wrong options
    verbmem  MUSE verbatim memorisation: continue a forget-text prompt, ROUGE-L F1 against the truth
    knowmem  MUSE knowledge memorisation: few-shot QA, ROUGE-L F1
    text     raw texts scored token by token (MUSE privacy leakage: Min-K% membership inference)
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..data.records import QA
from ..data.sources import load_spec
from ..errors import ConfigError, DataError

TOFU_FORGET_SPLITS = ("forget01", "forget05", "forget10")  # the splits TOFU ships perturbed answers for


@dataclass
class Task:
    name: str
    kind: str                      # qa | options | verbmem | knowmem | text
    items: list[QA]
    source: str                    # where the items came from (spec or path)
    role: str = "forget"           # forget | retain | utility | holdout
    icl: list[QA] = field(default_factory=list)  # knowmem few-shot examples

    def fingerprint(self) -> str:
        blob = json.dumps([r.to_json() for r in self.items + self.icl], sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _spec_task(name: str, kind: str, spec: str, role: str) -> Task:
    items = load_spec(spec)
    if not items:
        raise DataError(f"{name} set {spec!r} is empty")
    if kind in ("qa", "options") and any(r.question is None for r in items):
        raise DataError(f"{name} set {spec!r} holds raw text; QA evaluation needs question/answer pairs")
    if kind == "options" and any(not r.extra.get("perturbed_answer") for r in items):
        raise DataError(f"{name} set {spec!r}: every item needs 'perturbed_answer' options")
    return Task(name, kind, items, spec, role)


def _tofu_utility() -> list[Task]:
    return [_spec_task("real_authors", "options", "tofu/real_authors_perturbed", "utility"),
            _spec_task("world_facts", "options", "tofu/world_facts_perturbed", "utility")]


def tofu_mini(cfg) -> list[Task]:
    """TOFU-mini, the CPU protocol (docs/architecture.md): target fine-tuned on forget10, forget = forget01 (40 QA),
    retain = the other 360 QA of forget10, plus real authors and world facts."""
    return [_spec_task("forget", "qa", "tofu/forget01_perturbed", "forget"),
            _spec_task("retain", "qa", "tofu/forget10_perturbed-forget01_perturbed", "retain"),
            *_tofu_utility()]


def tofu(cfg) -> list[Task]:
    """TOFU's own protocol: forget = forgetXX (with perturbations), retain = TOFU's retain eval set."""
    if cfg.forget_split not in TOFU_FORGET_SPLITS:
        raise ConfigError(f"forget_split: TOFU ships perturbed answers for {list(TOFU_FORGET_SPLITS)}, "
                          f"not {cfg.forget_split!r}")
    return [_spec_task("forget", "qa", f"tofu/{cfg.forget_split}_perturbed", "forget"),
            _spec_task("retain", "qa", "tofu/retain_perturbed", "retain"),
            *_tofu_utility()]


def synthetic(cfg) -> list[Task]:
    """The built-in fictitious authors (same generator and parameters as `synth/...` specs)."""
    forget = cfg.forget or "synth/forget"
    retain = cfg.retain or "synth/retain"
    if not forget.startswith("synth/") or not retain.startswith("synth/"):
        raise ConfigError("benchmark synthetic takes synth/... specs for forget and retain")
    return [_spec_task("forget", "qa", forget, "forget"), _spec_task("retain", "qa", retain, "retain")]


def files(cfg) -> list[Task]:
    """A user's own forget (and optional retain) QA files."""
    if not cfg.forget:
        raise ConfigError("benchmark files needs forget=<spec> (e.g. file:my_forget.jsonl)")
    tasks = [_spec_task("forget", "qa", cfg.forget, "forget")]
    if cfg.retain:
        tasks.append(_spec_task("retain", "qa", cfg.retain, "retain"))
    return tasks


MUSE_FILES = {
    "verbmem": "verbmem/forget.json",
    "knowmem_forget": "knowmem/forget_qa.json",
    "knowmem_retain": "knowmem/retain_qa.json",
    "privleak_forget": "privleak/forget.json",
    "privleak_retain": "privleak/retain.json",
    "privleak_holdout": "privleak/holdout.json",
}


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


def _muse_records(path: Path, keys: tuple[str, str] | None) -> list[QA]:
    out = []
    for i, obj in enumerate(_read_json_list(path)):
        if keys is None:  # privleak: strings or {"text": ...}
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


def muse(cfg) -> list[Task]:
    """A MUSE-format directory (as in the MUSE repository's data/<corpus>/): any of verbmem/,
    knowmem/ (with optional *_icl.json few-shot files) and privleak/ (forget, holdout[, retain])."""
    if not cfg.muse_dir:
        raise ConfigError("benchmark muse needs muse_dir=<path to a MUSE corpus directory>")
    root = Path(cfg.muse_dir)
    if not root.is_dir():
        raise DataError(f"MUSE directory {str(root)!r} does not exist")
    tasks = []
    if (root / MUSE_FILES["verbmem"]).is_file():
        tasks.append(Task("verbmem", "verbmem", _muse_records(root / MUSE_FILES["verbmem"], ("prompt", "gt")),
                          str(root / MUSE_FILES["verbmem"]), "forget"))
    for name, role in (("knowmem_forget", "forget"), ("knowmem_retain", "retain")):
        path = root / MUSE_FILES[name]
        if path.is_file():
            icl_path = path.with_name(path.stem + "_icl.json")
            icl = _muse_records(icl_path, ("question", "answer")) if icl_path.is_file() else []
            tasks.append(Task(name, "knowmem", _muse_records(path, ("question", "answer")), str(path), role, icl))
    has_forget = (root / MUSE_FILES["privleak_forget"]).is_file()
    has_holdout = (root / MUSE_FILES["privleak_holdout"]).is_file()
    if has_forget != has_holdout:
        raise DataError(f"{root}: privacy leakage needs both {MUSE_FILES['privleak_forget']} and "
                        f"{MUSE_FILES['privleak_holdout']}")
    if has_forget:
        for name, role in (("privleak_forget", "forget"), ("privleak_holdout", "holdout"), ("privleak_retain", "retain")):
            path = root / MUSE_FILES[name]
            if path.is_file():
                tasks.append(Task(name, "text", _muse_records(path, None), str(path), role))
    if not tasks:
        raise DataError(f"{root}: no MUSE files found; expected any of {sorted(MUSE_FILES.values())}")
    return tasks


BENCHMARKS: dict[str, Callable] = {
    "tofu-mini": tofu_mini,
    "tofu": tofu,
    "synthetic": synthetic,
    "files": files,
    "muse": muse,
}


def build_tasks(cfg) -> list[Task]:
    if cfg.benchmark not in BENCHMARKS:
        raise ConfigError(f"unknown benchmark {cfg.benchmark!r}; valid benchmarks: {sorted(BENCHMARKS)}")
    tasks = BENCHMARKS[cfg.benchmark](cfg)
    if cfg.max_items is not None:
        for t in tasks:
            t.items = t.items[:cfg.max_items]
    return tasks
