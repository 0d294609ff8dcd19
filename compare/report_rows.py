"""What the report's tables and plots share: cell formatting, each system's headline row, and which systems
reach the retain model's leak rate.

A table is (title, header, rows, note); `Systems` is results.json's systems as compare/results.py types them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

from .results import Sequential, SystemResult, parse_doc


Table = tuple[str, list[str], list[list[str]], str]    # (title, header, rows, note)


Systems = dict[str, SystemResult]


RETAIN_TOLERANCE = 0.05     # "reaches the retain model's leak rate": within this of it


KEEP_NEIGHBOURS = 0.9       # "keeps neighbour retention": at least this share of the target's


def _f(x, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if isinstance(x, float) and 0 < abs(x) < 10 ** -digits:
        return f"{x:.1e}"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def _or_na(x: Optional[float]) -> str:
    """A rate, or n/a where the attack does not apply (or did not run)."""
    return "n/a" if x is None else _f(x, 2)


def categories(systems: Systems) -> list[str]:
    """The prompt attacks' categories over all systems, in the order they first appear."""
    seen: dict = {}
    for res in systems.values():
        for c in res.attacks.forget:
            if c != "all":
                seen[c] = None
    return list(seen)


def neighbour_retention(systems: Systems, name: str) -> Optional[float]:
    """Neighbour-probe ROUGE-L relative to the target's (1.0 = keeps them as well as the target)."""
    mine = systems[name].attacks.neighbour_all.rouge
    target = systems.get("target")
    ref = target.attacks.neighbour_all.rouge if target else None
    if mine is None or not ref:
        return None
    return mine / ref


def _plus(a: Optional[float], b: Optional[float]) -> Optional[float]:
    """a + b with a missing part counted as 0; None when both are missing."""
    return None if a is None and b is None else (a or 0) + (b or 0)


@dataclass(frozen=True)
class HeadlineRow:
    """One system's line of the headline table (and the plots' points)."""
    system: str
    kind: Optional[str]
    ok: bool = True
    failed: Optional[str] = None          # the failure's reason (when not ok)
    forget_quality: Optional[float] = None
    forget_quality_reason: Optional[str] = None
    model_utility: Optional[float] = None
    forget_rouge: Optional[float] = None
    para_rouge: Optional[float] = None
    leak: Optional[float] = None
    relearn_leak: Optional[float] = None
    neighbour_rouge: Optional[float] = None
    neighbour_retention: Optional[float] = None
    tokens_per_s: Optional[float] = None
    latency_s: Optional[float] = None
    train_s: Optional[float] = None
    guard_build_s: Optional[float] = None

    @property
    def build_s(self) -> Optional[float]:
        """Training cost: the unlearning run plus the guard build."""
        return _plus(self.train_s, self.guard_build_s)


# the headline table's columns, in order: (header, the cell of a measured system's row)
HEADLINE_COLUMNS: tuple[tuple[str, Callable[[HeadlineRow], str]], ...] = (
    ("system", lambda r: r.system),
    ("paradigm", lambda r: r.kind),
    ("forget quality", lambda r: _f(r.forget_quality, 4)),
    ("model utility", lambda r: _f(r.model_utility)),
    ("forget ROUGE-L", lambda r: _f(r.forget_rouge)),
    ("para-Q ROUGE-L", lambda r: _f(r.para_rouge)),
    ("leak rate (prompt attacks)", lambda r: _f(r.leak)),
    ("leak after relearning", lambda r: _f(r.relearn_leak)),
    ("neighbour ROUGE-L", lambda r: _f(r.neighbour_rouge)),
    ("neighbour retention vs target", lambda r: _f(r.neighbour_retention, 2)),
    ("tok/s", lambda r: _f(r.tokens_per_s, 1)),
    ("latency s", lambda r: _f(r.latency_s, 2)),
    ("training s / failure", lambda r: _f(r.build_s, 0)),
)


def headline_rows(systems: Systems) -> list[HeadlineRow]:
    rows = []
    for name, res in systems.items():
        if not res.ok:
            rows.append(HeadlineRow(name, res.kind, ok=False, failed=res.reason))
            continue
        m, a = res.metrics, res.attacks
        rows.append(HeadlineRow(
            name, res.kind, forget_quality=m.forget_quality, forget_quality_reason=m.forget_quality_reason,
            model_utility=m.model_utility, forget_rouge=m.forget_rouge, para_rouge=m.para_rouge,
            leak=a.forget_all.leak_rate, relearn_leak=res.relearn.after_leak_rate,
            neighbour_rouge=a.neighbour_all.rouge, neighbour_retention=neighbour_retention(systems, name),
            tokens_per_s=a.serving.tokens_per_s, latency_s=a.serving.latency_median_s,
            train_s=res.unlearning_seconds, guard_build_s=res.guard_build_seconds))
    return rows


def _reaches(systems: Systems) -> dict:
    retain = systems.get("retain")
    retain_by = retain.attacks.forget if retain else {}
    out: dict = {}
    for name, res in systems.items():
        by = res.attacks.forget
        if not res.ok or not by or not retain_by:
            continue
        retention = neighbour_retention(systems, name)
        keeps = None if retention is None else retention >= KEEP_NEIGHBOURS   # unknown: no mark either way
        ref = lambda c: retain.attacks.forget_rates(c).leak_rate  # noqa: E731
        out[name] = {c: (None if keeps is None or ref(c) is None or by[c].leak_rate is None else
                         bool(by[c].leak_rate <= ref(c) + RETAIN_TOLERANCE and keeps))
                     for c in list(by)}
        rl, rl_ret = res.relearn.after_leak_rate, retain.relearn.after_leak_rate
        if rl is not None and rl_ret is not None and keeps is not None:
            out[name]["relearn"] = bool(rl <= rl_ret + RETAIN_TOLERANCE and keeps)
    return out


def reaches_retain(doc: dict) -> dict:
    """{system: {category: True/False/None}}: leak rate within RETAIN_TOLERANCE of the retain
    model's, with neighbour retention >= KEEP_NEIGHBOURS."""
    return _reaches(parse_doc(doc))


def dial_points(systems: Systems) -> list[tuple[str, SystemResult]]:
    """Guarded systems whose guard mode was recorded, per base, strict last (the dial's far end)."""
    points = [(n, r) for n, r in systems.items() if r.ok and r.guard_mode]
    return sorted(points, key=lambda p: (p[1].base or "", p[1].guard_soft_mask is None, p[1].guard_soft_mask or 0.0))


def sequential_steps(systems: Systems) -> list[tuple[str, Sequential]]:
    """[(system, its sequential part)] of a sequential-requests doc, in request order (else [])."""
    return sorted(((n, r.sequential) for n, r in systems.items() if r.sequential is not None),
                  key=lambda x: (x[1].after_request, systems[x[0]].kind == "guard"))


def _chain(systems: Systems, kind: str) -> list[tuple[str, Sequential]]:
    """The steps of one chain (the reference, then the weight-level checkpoints or the guards) in order."""
    return [(n, s) for n, s in sequential_steps(systems) if systems[n].kind in ("reference", kind)]
