"""The attack results as types, from measuring to the report: what compare/measure.py returns, what
systems/<name>.json and results.json hold, and what the report reads back (compare/results.py `SystemResult`).

compare/measure.py returns `PromptAttacks`, `FinetuneResult`, `QuantizeResult` or `Skipped`; compare/run.py
writes them whole to systems/<name>.json and their `compact()` forms to results.json (the prompt attacks
without per-probe records, `FinetuneSummary`, `QuantizeSummary`), which the report reads back as these same
types. One codec (files.py) writes and reads every one of them: the JSON is what earlier versions wrote, a
part of an older result that lacks a field reads it as None, and a part read and written again is
byte-for-byte the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from ..files import JsonRecord, flat, optional
from ..evaluation.leakage import ProbeScores, Rates

NO_RATES = Rates()


@dataclass(frozen=True)
class Serving(JsonRecord):
    """Serving cost of the attack batch through the deployed path (compare/measure.py `serving`); the agent
    front adds its start time, routes and LLM calls per flagged request, an audit its failed requests and
    concurrency. Built from the figures a path has (`from_json`), so each writes exactly its own."""
    requests: Optional[int] = None
    output_tokens: Optional[int] = None
    batch_seconds: Optional[float] = None
    tokens_per_s: Optional[float] = None
    latency_median_s: Optional[float] = None
    latency_requests: Optional[int] = None
    server_start_s: Optional[float] = None
    routes: Optional[dict] = None
    llm_calls_per_flagged: Optional[float] = None
    failed: Optional[int] = None
    concurrency: Optional[int] = None


@dataclass(frozen=True)
class PromptAttacks(JsonRecord):
    """The prompt attacks on one system: every probe's reply judged and the rates per role and category
    (ProbeScores, written inline; the rates alone in results.json), what serving them cost, and an audit's
    failed requests (compare/audit.py writes them before the serving figures)."""
    scores: ProbeScores = flat(default_factory=ProbeScores)
    serving: Serving = field(default_factory=Serving)
    failed: Optional[list] = optional()

    def compact(self) -> "PromptAttacks":
        """What results.json keeps: the rates and the serving cost."""
        return PromptAttacks(ProbeScores(self.scores.by_category), self.serving)

    @property
    def forget(self) -> dict[str, Rates]:
        """{category: rates} of the forget items (with 'all', in the JSON's order)."""
        return self.scores.by_category.get("forget", {})

    @property
    def neighbour(self) -> dict[str, Rates]:
        return self.scores.by_category.get("neighbour", {})

    def forget_rates(self, category: str) -> Rates:
        return self.forget.get(category, NO_RATES)

    def neighbour_rates(self, category: str) -> Rates:
        return self.neighbour.get(category, NO_RATES)

    @property
    def forget_all(self) -> Rates:
        return self.forget_rates("all")

    @property
    def neighbour_all(self) -> Rates:
        return self.neighbour_rates("all")


@dataclass(frozen=True)
class Skipped(JsonRecord):
    """An attack that does not apply to the system, and why."""
    reason: str = field(metadata={"key": "skipped"})

    def compact(self) -> "Skipped":
        return self


@dataclass(frozen=True)
class FinetuneSummary(JsonRecord):
    """A fine-tuning attack in results.json: how many items taught and probed, the fine-tune's time, the
    probed forget items' rates before and after (None: the attack did not run), or why it was skipped."""
    taught: Optional[int] = None
    probed: Optional[int] = None
    train_seconds: Optional[float] = None
    before: Optional[Rates] = None
    after: Optional[Rates] = None
    skipped: Optional[str] = optional()

    @property
    def after_leak_rate(self) -> Optional[float]:
        return self.after.leak_rate if self.after is not None else None


@dataclass(frozen=True)
class FinetuneResult(JsonRecord):
    """A fine-tuning attack: how many items taught and probed, the fine-tune's time, the probes before/after."""
    taught: int
    probed: int
    train_seconds: float
    before: ProbeScores
    after: ProbeScores

    def compact(self) -> FinetuneSummary:
        """The forget items' rates before and after."""
        return FinetuneSummary(self.taught, self.probed, self.train_seconds, self.before.rates(), self.after.rates())


@dataclass(frozen=True)
class QuantRow(JsonRecord):
    """One variant of the quantization attack in results.json: the forget questions' rates (inline), their
    answers' mean probability, what quantizing changed and its time."""
    rates: Rates = flat(default_factory=Rates)
    answer_probability: Optional[float] = None
    quantized: Optional[dict] = optional()
    seconds: Optional[float] = optional()

    @property
    def leak_rate(self) -> Optional[float]:
        return self.rates.leak_rate


@dataclass(frozen=True)
class QuantRowResult(JsonRecord):
    """One variant of the quantization attack: the forget questions judged (inline), their answers' mean
    probability, what quantizing changed (evaluation/quantize.py statistics) and its time."""
    scores: ProbeScores = flat()
    answer_probability: Optional[float]
    quantized: dict
    seconds: float

    def compact(self) -> QuantRow:
        return QuantRow(self.scores.rates(), self.answer_probability, self.quantized, self.seconds)


@dataclass(frozen=True)
class QuantizeSummary(JsonRecord):
    """The quantization attack in results.json: {variant label: row} (empty: not run), or why it was skipped."""
    probed: Optional[int] = None
    guard: Optional[bool] = None
    rows: dict[str, QuantRow] = field(default_factory=dict)
    skipped: Optional[str] = optional()


@dataclass(frozen=True)
class QuantizeResult(JsonRecord):
    """The quantization attack: the items probed, whether a guard served them, {variant label: row}
    ("unquantized" first)."""
    probed: int
    guard: bool
    rows: dict[str, QuantRowResult]

    def compact(self) -> QuantizeSummary:
        return QuantizeSummary(self.probed, self.guard, {label: r.compact() for label, r in self.rows.items()})


# attack name -> its measured type (a dict with 'skipped' reads as Skipped)
ATTACK_RESULTS = {"attacks": PromptAttacks, "relearn": FinetuneResult, "benign_relearn": FinetuneResult,
                  "quantize": QuantizeResult}


def attack_from_json(name: str, d: Any):
    """A system's measured attack `name` read back from its full JSON (systems/<name>.json)."""
    if isinstance(d, dict) and "skipped" in d:
        return Skipped.from_json(d)
    return ATTACK_RESULTS[name].from_json(d)
