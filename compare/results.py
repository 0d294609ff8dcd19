"""What the report reads of a results.json, as dataclasses parsed at the edge.

results.json is written as plain JSON by compare/run.py (`_compact`), compare/audit.py and
compare/sequential.py, and stays exactly so on disk; `parse_doc` reads its systems into these types. The
attack parts are the measuring side's own types (compare/attack_results.py), the leaf records are read by
the one codec (files.py); `Metrics`, `Muse`, `SystemResult` and `Provenance` are the report's views over a
system's or the doc's parts. Results of older versions lack the fields added since (the truth-ratio
profile, the forget-quality reason, the guard build time, serving figures, the weights attacks,
sequential requests...): a missing field, or a part that is not an object, reads as None / empty,
so an older cached run still renders. Values are kept as the JSON holds them (an int stays an int:
the report formats ints and floats differently).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from ..files import JsonRecord
from ..evaluation.metrics.bootstrap import Interval
from ..evaluation.results import ForgetQuality, Summary, Utility
from .attack_results import FinetuneSummary, PromptAttacks, QuantizeSummary
from .seeds import SeedRun


def _obj(d: Any) -> dict:
    """`d` when it is a JSON object, else {} (a part an older result lacks, or holds as null)."""
    return d if isinstance(d, dict) else {}


@dataclass(frozen=True)
class TruthRatio(JsonRecord):
    """The forget set's truth-ratio distribution (evaluation/metrics/tofu.py `truth_ratio_profile`)."""
    median: Optional[float] = None
    q1: Optional[float] = None
    q3: Optional[float] = None
    prefers_false: Optional[float] = None

    @classmethod
    def read(cls, d: Any) -> Optional["TruthRatio"]:
        """None where the result has no profile (an empty one counts as none)."""
        return cls.from_json(d) if d and isinstance(d, dict) else None


@dataclass(frozen=True)
class Metrics:
    """The headline metrics: the summary against the retain model, and the forget set's ROUGE-L."""
    forget_quality: Optional[float] = None
    forget_quality_reason: Optional[str] = None
    model_utility: Optional[float] = None
    ks_statistic: Optional[float] = None
    truth_ratio: Optional[TruthRatio] = None
    forget_rouge: Optional[float] = None          # aggregates.forget.rougeL_recall
    para_rouge: Optional[float] = None            # ... of the paraphrased questions
    forget_quality_interval: Optional[Interval] = None
    model_utility_interval: Optional[Interval] = None

    @classmethod
    def from_json(cls, summary: Any, aggregates: Any) -> "Metrics":
        s, forget = Summary.from_json(summary), _obj(_obj(aggregates).get("forget"))
        fq, utility = s.forget or ForgetQuality(None), s.utility or Utility(None, {})
        return cls(fq.value, fq.reason, utility.value, fq.ks_statistic, TruthRatio.read(fq.truth_ratio),
                   forget.get("rougeL_recall"), forget.get("rougeL_recall_paraphrased_question"),
                   Interval.from_json(fq.interval), Interval.from_json(utility.interval))


@dataclass(frozen=True)
class Muse:
    """MUSE's metrics: verbatim and knowledge memorisation (ROUGE-L F1) and membership inference (Min-K% AUC
    forget vs holdout, PrivLeak against the retain model's AUC). None where the benchmark has no such task."""
    verbmem: Optional[float] = None
    knowmem_forget: Optional[float] = None
    knowmem_retain: Optional[float] = None
    mia_auc: Optional[float] = None
    privleak: Optional[float] = None

    @classmethod
    def from_json(cls, summary: Any, aggregates: Any) -> "Muse":
        leak, a = Summary.from_json(summary).privleak, _obj(aggregates)
        f1 = lambda task: _obj(a.get(task)).get("rougeL_f1")  # noqa: E731
        return cls(f1("verbmem"), f1("knowmem_forget"), f1("knowmem_retain"), leak.mia_auc if leak else None,
                   leak.value if leak else None)

    @property
    def measured(self) -> bool:
        return any(v is not None for v in (self.verbmem, self.knowmem_forget, self.knowmem_retain, self.mia_auc))


@dataclass(frozen=True)
class Training(JsonRecord):
    """The system's training run (build.py `run_record`)."""
    train_seconds: Optional[float] = None
    peak_memory_mb: Optional[float] = None
    trainable_fraction: Optional[float] = None


@dataclass(frozen=True)
class RequestResult(JsonRecord):
    """One deletion request's forget set, measured after some request (compare/sequential.py)."""
    request: Optional[str] = None
    items: Optional[int] = None
    answer_probability: Optional[float] = None
    forget_quality: Optional[float] = None


@dataclass(frozen=True)
class Sequential(JsonRecord):
    """A checkpoint of the sequential-requests chain: after which request, each request's figures."""
    after_request: int
    requests: list[RequestResult] = field(default_factory=list)
    forget_quality_so_far: Optional[float] = None

    @classmethod
    def read(cls, d: Any) -> Optional["Sequential"]:
        """None where the system is no step of a sequential-requests chain."""
        return cls.from_json(d) if d and isinstance(d, dict) else None


@dataclass(frozen=True)
class SystemResult:
    """One system of a results.json: measured ("ok") or failed with a reason."""
    name: str
    status: Optional[str] = None
    kind: Optional[str] = None
    base: Optional[str] = None
    reason: Optional[str] = None
    metrics: Metrics = Metrics()
    attacks: PromptAttacks = PromptAttacks()
    training: Training = Training()
    guard_build_seconds: Optional[float] = None
    guard_mode: Optional[str] = None        # strict | calibrated (results written before modes existed: None)
    guard_soft_mask: Optional[float] = None
    relearn: FinetuneSummary = FinetuneSummary()
    benign_relearn: FinetuneSummary = FinetuneSummary()
    quantize: QuantizeSummary = QuantizeSummary()
    sequential: Optional[Sequential] = None
    muse: Muse = Muse()
    seeds: tuple[SeedRun, ...] = ()         # with `seeds:`: the system's own run, then its other seeds
    seeds_error: Optional[str] = None
    stage_seconds: dict = field(default_factory=dict)   # wall seconds per measuring stage, in the order run

    @classmethod
    def from_json(cls, name: str, d: Any) -> "SystemResult":
        if not isinstance(d, dict):
            raise ValueError(f"results.json system {name!r}: expected an object, got {type(d).__name__}")
        return cls(name, d.get("status"), d.get("kind"), d.get("base"), d.get("reason"),
                   Metrics.from_json(d.get("summary"), d.get("aggregates")), PromptAttacks.from_json(d.get("attacks")),
                   Training.from_json(d.get("training")), _obj(d.get("guard")).get("build_seconds"),
                   _obj(d.get("guard")).get("mode"), _obj(d.get("guard")).get("soft_mask"),
                   FinetuneSummary.from_json(d.get("relearn")), FinetuneSummary.from_json(d.get("benign_relearn")),
                   QuantizeSummary.from_json(d.get("quantize")), Sequential.read(d.get("sequential")),
                   Muse.from_json(d.get("summary"), d.get("aggregates")),
                   tuple(r for r in map(SeedRun.from_json, d.get("seeds") or []) if r), d.get("seeds_error"),
                   _obj(d.get("stage_seconds")))

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def unlearning_seconds(self) -> Optional[float]:
        """The weight-level unlearning run's training time (the target and retain fine-tunes are the
        benchmark's set-up, not an unlearning cost)."""
        return None if self.base in ("target", "retain") else self.training.train_seconds


@dataclass(frozen=True)
class DataRecord(JsonRecord):
    """Where a data set came from: its source, item count and content fingerprint."""
    source: Optional[str] = None
    items: Optional[int] = None
    fingerprint: Optional[str] = None


@dataclass(frozen=True)
class Provenance:
    """What reproduces a report: when it started, its wall time, package versions, data sets, weights
    fingerprints, probe counts and the config it ran (kept as the JSON holds it)."""
    started: Any = ""
    wall_s: Any = ""
    versions: dict = field(default_factory=dict)
    data: dict[str, DataRecord] = field(default_factory=dict)
    fingerprints: dict = field(default_factory=dict)
    probes: Any = None
    config: Any = field(default_factory=dict)

    @classmethod
    def from_json(cls, doc: dict) -> "Provenance":
        p = _obj(doc.get("provenance"))
        return cls(p.get("started", ""), doc.get("wall_s", ""), p.get("versions") or {},
                   {k: DataRecord.from_json(v) for k, v in (p.get("data") or {}).items()},
                   doc.get("fingerprints") or {}, p.get("probes"), p.get("config", {}))


@dataclass(frozen=True)
class ReportDoc:
    """A results.json as the report reads it: its name, systems in order, provenance."""
    name: str
    systems: dict[str, SystemResult]
    provenance: Provenance

    @classmethod
    def from_json(cls, doc: dict) -> "ReportDoc":
        return cls(doc["name"], parse_doc(doc), Provenance.from_json(doc))


def parse_doc(doc: dict) -> dict[str, SystemResult]:
    """{system name: its typed result} of a results.json doc, in the doc's order."""
    return {name: SystemResult.from_json(name, res) for name, res in doc["systems"].items()}
