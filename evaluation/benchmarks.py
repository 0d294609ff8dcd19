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

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..data.muse import SPLITS_BY_NAME, load_mini, muse_root, read_split, split_files
from ..data.records import QA
from ..data.sources import load_spec
from ..errors import ConfigError, DataError
from ..files import json_digest

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
        return json_digest([r.to_json() for r in self.items + self.icl])


def _spec_task(name: str, kind: str, spec: str, role: str) -> Task:
    items = load_spec(spec)
    if not items:
        raise DataError(f"{name} set {spec!r} is empty")
    if kind in ("qa", "options") and any(r.question is None for r in items):
        raise DataError(f"{name} set {spec!r} holds raw text; QA evaluation needs question/answer pairs")
    if kind == "options" and any(not r.perturbed_answers for r in items):
        raise DataError(f"{name} set {spec!r}: every item needs 'perturbed_answer' options")
    return Task(name, kind, items, spec, role)


def _tofu_utility() -> list[Task]:
    return [_spec_task("real_authors", "options", "tofu/real_authors_perturbed", "utility"),
            _spec_task("world_facts", "options", "tofu/world_facts_perturbed", "utility")]


TOFU_MINI_HOLDOUT = 40   # non-member answers for membership inference: retain90's first two authors


def tofu_mini(cfg) -> list[Task]:
    """TOFU-mini, the CPU protocol (docs/architecture.md): target fine-tuned on forget10, forget = forget01 (40 QA),
    retain = the other 360 QA of forget10, plus real authors and world facts. Membership inference
    (privleak) scores forget01's answers, which the target was trained on, against as many answers about
    retain90's first authors, whom neither the target nor the retain model saw."""
    forget = _spec_task("forget", "qa", "tofu/forget01_perturbed", "forget")
    holdout = _spec_task("privleak_holdout", "text", "tofu/retain90", "holdout")
    return [forget,
            _spec_task("retain", "qa", "tofu/forget10_perturbed-forget01_perturbed", "retain"),
            *_tofu_utility(),
            Task("privleak_forget", "text", forget.items, forget.source, "forget"),
            Task("privleak_holdout", "text", holdout.items[:TOFU_MINI_HOLDOUT], f"{holdout.source}[:{TOFU_MINI_HOLDOUT}]",
                 "holdout")]


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


def _muse_root(cfg) -> Path:
    return Path(cfg.muse_dir) if cfg.muse_dir else muse_root()


def muse(cfg) -> list[Task]:
    """A MUSE directory as its authors ship it (data/muse.py: every split, or a refusal naming the
    missing files): verbmem, knowmem forget/retain with their few-shot prompts, privleak forget /
    holdout / retain. muse_dir, else $UNLEARN_MUSE_DIR, else ../shared/data/muse-news."""
    root = _muse_root(cfg)
    files = split_files(root)
    splits = {name: read_split(path, SPLITS_BY_NAME[name].fmt) for name, path in files.items()}
    src = {name: str(path) for name, path in files.items()}
    return [Task("verbmem", "verbmem", splits["verbmem_forget"], src["verbmem_forget"], "forget"),
            Task("knowmem_forget", "knowmem", splits["knowmem_forget"], src["knowmem_forget"], "forget",
                 splits["knowmem_forget_icl"]),
            Task("knowmem_retain", "knowmem", splits["knowmem_retain"], src["knowmem_retain"], "retain",
                 splits["knowmem_retain_icl"]),
            *(Task(name, "text", splits[name], src[name], role)
              for name, role in (("privleak_forget", "forget"), ("privleak_holdout", "holdout"),
                                 ("privleak_retain", "retain")))]


def muse_mini(cfg) -> list[Task]:
    """MUSE-mini (data/muse.py): a target fine-tuned on a slice of MUSE-News's forget articles plus a
    retain slice; knowmem = the authors' questions the slices answer (MUSE's few-shot prompts), the
    same questions as chat QA (`forget`/`retain`: answer probability, and the items compare attacks),
    verbmem = the forget passages cut in two, privleak = forget passages vs as many holdout passages."""
    root = _muse_root(cfg)
    mini = load_mini(root)
    src = f"muse/mini ({root})"
    return [Task("verbmem", "verbmem", mini.verbmem, f"{src} verbmem", "forget"),
            Task("knowmem_forget", "knowmem", mini.knowmem_forget, f"{src} knowmem_forget", "forget",
                 mini.knowmem_forget_icl),
            Task("knowmem_retain", "knowmem", mini.knowmem_retain, f"{src} knowmem_retain", "retain",
                 mini.knowmem_retain_icl),
            Task("forget", "qa", mini.knowmem_forget, f"{src} knowmem_forget", "forget"),
            Task("retain", "qa", mini.knowmem_retain, f"{src} knowmem_retain", "retain"),
            Task("privleak_forget", "text", mini.privleak_forget, f"{src} privleak_forget", "forget"),
            Task("privleak_holdout", "text", mini.privleak_holdout, f"{src} privleak_holdout", "holdout")]


BENCHMARKS: dict[str, Callable] = {
    "tofu-mini": tofu_mini,
    "tofu": tofu,
    "synthetic": synthetic,
    "files": files,
    "muse": muse,
    "muse-mini": muse_mini,
}


def build_tasks(cfg) -> list[Task]:
    if cfg.benchmark not in BENCHMARKS:
        raise ConfigError(f"unknown benchmark {cfg.benchmark!r}; valid benchmarks: {sorted(BENCHMARKS)}")
    tasks = BENCHMARKS[cfg.benchmark](cfg)
    if cfg.max_items is not None:
        for t in tasks:
            t.items = t.items[:cfg.max_items]
    return tasks
