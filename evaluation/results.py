"""An evaluation's results as types: per-item records, per-task results, the summary, the whole result.

    records    one per benchmark item (scoring.py builds them): QARecord (qa, options), MuseRecord
               (verbmem, knowmem), TextRecord (text passages, for membership inference)
    TaskResult one per task: what it is, its aggregate {metric: value} and its records
    Summary    the headline numbers (summary.py): model utility, forget quality, PrivLeak
    EvalResult one evaluation of one system: its config, model, timing, tasks, guard notes, summary

They become JSON only at the edges (harness.py's cache and `--out` file, compare's per-system files)
with `to_json`, and are read back with `from_json`. The JSON is what earlier versions wrote: TOFU's log
field names, and a field left out rather than null when it was not measured (so a record's field is
None exactly when the JSON lacks it), so cached results stay valid without re-measuring.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Optional, Union

from ..errors import DataError


def _present(obj) -> dict:
    """The fields of `obj` that hold a value, in declaration order (None: not measured, left out)."""
    return {f.name: getattr(obj, f.name) for f in fields(obj) if getattr(obj, f.name) is not None}


def _build(cls, d: Any, what: str):
    """`cls(**d)`, refusing what is not an object or names fields `cls` does not have."""
    if not isinstance(d, dict):
        raise DataError(f"{what}: expected a JSON object, got {type(d).__name__}")
    unknown = sorted(set(d) - {f.name for f in fields(cls)})
    if unknown:
        raise DataError(f"{what}: unknown field(s) {unknown}; known: {[f.name for f in fields(cls)]}")
    try:
        return cls(**d)
    except TypeError:   # a required field is missing
        missing = [f.name for f in fields(cls)
                   if f.name not in d and f.default is MISSING and f.default_factory is MISSING]
        raise DataError(f"{what}: missing field(s) {missing}") from None


# ----------------------------------------------------------------------------- per-item records
@dataclass(frozen=True)
class QARecord:
    """A question / answer item (TOFU's log field names): generated answers with ROUGE, teacher-forced
    losses of the answer, its paraphrase and perturbations, and what follows from them."""
    question: str
    answer: str
    generated_text: Optional[list] = None              # [question, generated answer, answer]
    rouge1_recall: Optional[float] = None
    rougeL_recall: Optional[float] = None
    rougeL_f1: Optional[float] = None
    generated_paraphrased_question: Optional[str] = None   # the answer to a forget item's paraphrased question
    rougeL_recall_paraphrased_question: Optional[float] = None
    avg_gt_loss: Optional[float] = None
    gt_loss: Optional[float] = None
    num_token_gt: Optional[int] = None
    exact_memorization: Optional[float] = None
    extraction_strength: Optional[float] = None
    average_perturb_loss: Optional[list] = None
    perturb_loss: Optional[list] = None
    num_token_perturb: Optional[list] = None
    avg_paraphrased_loss: Optional[float] = None
    paraphrased_loss: Optional[float] = None
    num_token_paraphrased: Optional[int] = None
    truth_ratio: Optional[float] = None
    probability: Optional[float] = None
    # a non-forget item's perturbed answers left out of its truth ratio / option probability (evaluation/
    # perturbed.py), and those two over every perturbed answer; absent where none was left out
    perturbed_dropped: Optional[list] = None
    truth_ratio_all: Optional[float] = None
    probability_all: Optional[float] = None

    @property
    def generated(self) -> Optional[str]:
        return self.generated_text[1] if self.generated_text else None


@dataclass(frozen=True)
class MuseRecord:
    """A MUSE verbmem passage or knowmem question: the generated continuation or answer with its ROUGE-L
    F1; verbmem's memorisation of the true continuation."""
    prompt: str
    answer: str
    exact_memorization: Optional[float] = None
    extraction_strength: Optional[float] = None
    generated: Optional[str] = None
    rougeL_f1: Optional[float] = None


@dataclass(frozen=True)
class TextRecord:
    """A passage scored for membership inference (metrics/mia.py): its Min-K% score, mean loss (LOSS), ZLib
    and Min-K%++ scores (no tokens: none)."""
    n_tokens: int
    min_k: Optional[float] = None
    avg_loss: Optional[float] = None
    zlib: Optional[float] = None
    min_k_pp: Optional[float] = None


Record = Union[QARecord, MuseRecord, TextRecord]
RECORD_TYPES: dict[str, type] = {"qa": QARecord, "options": QARecord, "verbmem": MuseRecord,
                                 "knowmem": MuseRecord, "text": TextRecord}


def record_from_json(kind: str, d: Any) -> Record:
    if kind not in RECORD_TYPES:
        raise DataError(f"evaluation result: unknown task kind {kind!r}; known: {sorted(RECORD_TYPES)}")
    return _build(RECORD_TYPES[kind], d, f"a {kind} item record")


def column(items, key: str) -> list:
    """The values of field `key` over the records that have it (in order)."""
    return [v for v in (getattr(it, key, None) for it in items) if v is not None]


# ----------------------------------------------------------------------------- per task
@dataclass(frozen=True)
class TaskResult:
    """One task of a benchmark, measured: its kind and role, where its items came from, their fingerprint,
    the aggregate {metric: value} (metric names as the config's metrics produce them, with n_items)."""
    kind: str
    role: str
    source: str
    fingerprint: str
    aggregate: dict
    items: list

    def column(self, key: str) -> list:
        return column(self.items, key)

    def to_json(self) -> dict:
        return {"kind": self.kind, "role": self.role, "source": self.source, "fingerprint": self.fingerprint,
                "aggregate": self.aggregate, "items": [_present(it) for it in self.items]}

    @classmethod
    def from_json(cls, d: Any, name: str = "?") -> "TaskResult":
        t = _build(cls, d, f"task {name!r}")
        return cls(t.kind, t.role, t.source, t.fingerprint, dict(t.aggregate),
                   [record_from_json(t.kind, it) for it in t.items])


# ----------------------------------------------------------------------------- summary
@dataclass(frozen=True)
class Utility:
    """TOFU's model utility: the harmonic mean of `components` ({set.metric: value}); None with a reason
    when a component is missing; `interval` a bootstrap interval over items (bootstrap.Interval's JSON)."""
    value: Optional[float]
    components: dict
    interval: Optional[dict] = None
    reason: Optional[str] = None

    def to_json(self) -> dict:
        tail = {"model_utility_interval": self.interval} if self.value is not None else \
            {"model_utility_reason": self.reason}
        return {"model_utility": self.value, "model_utility_components": self.components, **tail}


@dataclass(frozen=True)
class ForgetQuality:
    """TOFU's forget quality: the KS test's p-value of the forget truth ratios against the retain model's
    (`reference`); None with a reason when it cannot be computed. `truth_ratio`: where the system's own
    ratios sit (metrics/tofu.py truth_ratio_profile)."""
    value: Optional[float]
    ks_statistic: Optional[float] = None
    interval: Optional[dict] = None
    reference: Optional[str] = None
    reason: Optional[str] = None
    truth_ratio: Optional[dict] = None

    def to_json(self) -> dict:
        out = {"forget_truth_ratio": self.truth_ratio} if self.truth_ratio is not None else {}
        if self.value is None:
            return {**out, "forget_quality": None, "forget_quality_reason": self.reason}
        return {**out, "forget_quality": self.value, "ks_statistic": self.ks_statistic,
                "forget_quality_interval": self.interval, "forget_quality_reference": self.reference}


@dataclass(frozen=True)
class PrivLeak:
    """MUSE's PrivLeak: the Min-K% AUC (forget vs holdout) relative to the retain model's, in percent."""
    mia_auc: float
    value: Optional[float]
    reason: Optional[str] = None
    # per membership-inference attack (metrics/mia.py): {attack: {auc, privleak, guard_moves}}
    attacks: Optional[dict] = None

    def to_json(self) -> dict:
        tail = {"privleak_reason": self.reason} if self.value is None else {}
        if self.attacks is not None:
            tail["mia_attacks"] = self.attacks
        return {"mia_auc": self.mia_auc, "privleak": self.value, **tail}


@dataclass(frozen=True)
class Summary:
    """The headline numbers of one evaluation; a part is None when the config did not ask for it."""
    utility: Optional[Utility] = None
    forget: Optional[ForgetQuality] = None
    privleak: Optional[PrivLeak] = None

    def without_reference(self, reason: str) -> "Summary":
        """This summary with forget quality missing for `reason` (a comparison without a retain model)."""
        profile = self.forget.truth_ratio if self.forget else None
        return Summary(self.utility, ForgetQuality(None, reason=reason, truth_ratio=profile), self.privleak)

    def to_json(self) -> dict:
        return {k: v for part in (self.utility, self.forget, self.privleak) if part is not None
                for k, v in part.to_json().items()}

    @classmethod
    def from_json(cls, d: Any) -> "Summary":
        d = d if isinstance(d, dict) else {}
        utility = forget = privleak = None
        if "model_utility" in d:
            utility = Utility(d["model_utility"], d.get("model_utility_components") or {},
                              d.get("model_utility_interval"), d.get("model_utility_reason"))
        if "forget_quality" in d or "forget_truth_ratio" in d:
            forget = ForgetQuality(d.get("forget_quality"), d.get("ks_statistic"), d.get("forget_quality_interval"),
                                   d.get("forget_quality_reference"), d.get("forget_quality_reason"),
                                   d.get("forget_truth_ratio"))
        if "mia_auc" in d:
            privleak = PrivLeak(d["mia_auc"], d.get("privleak"), d.get("privleak_reason"), d.get("mia_attacks"))
        return cls(utility, forget, privleak)


# ----------------------------------------------------------------------------- one evaluation
@dataclass(frozen=True)
class GuardNotes:
    """What a guarded system's evaluation records of its guard: which prompts it flagged, per task and
    answer key ('forget/generated'), and what one classification cost."""
    policy: str
    calibration: dict
    flagged_rate: dict
    flagged: dict
    prompts: dict
    classify_ms_per_prompt: float

    def to_json(self) -> dict:
        return _present(self)


@dataclass(frozen=True)
class EvalResult:
    """One system measured on one benchmark (`unlearn eval`'s output, compare's per-system metrics). Only
    `tasks` is required of a file read back (a hand-written retain reference holds tasks and an AUC)."""
    benchmark: str = ""
    config: dict = field(default_factory=dict)      # the EvalConfig, as JSON
    model: dict = field(default_factory=dict)       # {ref, path, fingerprint}
    versions: dict = field(default_factory=dict)
    timing: dict = field(default_factory=dict)      # {stage_s: seconds, ...}
    tasks: dict = field(default_factory=dict)       # task name -> TaskResult
    privleak_auc: Optional[float] = None
    guard: Optional[GuardNotes] = None
    summary: Optional[Summary] = None
    wall_s: Optional[float] = None

    def task(self, name: str) -> Optional[TaskResult]:
        return self.tasks.get(name)

    def to_json(self) -> dict:
        out = {"benchmark": self.benchmark, "config": self.config, "model": self.model, "versions": self.versions,
               "timing": self.timing, "tasks": {n: t.to_json() for n, t in self.tasks.items()},
               "privleak_auc": self.privleak_auc}
        if self.guard is not None:
            out["guard"] = self.guard.to_json()
        if self.summary is not None:
            out["summary"] = self.summary.to_json()
        if self.wall_s is not None:
            out["wall_s"] = self.wall_s
        return out

    @classmethod
    def from_json(cls, d: Any, what: str = "evaluation result") -> "EvalResult":
        r = _build(cls, d, what)
        if not isinstance(r.tasks, dict):
            raise DataError(f"{what}: 'tasks' is not an object")
        return cls(r.benchmark, r.config, r.model, r.versions, r.timing,
                   {n: TaskResult.from_json(t, n) for n, t in r.tasks.items()}, r.privleak_auc,
                   _build(GuardNotes, r.guard, f"{what}: guard") if r.guard is not None else None,
                   Summary.from_json(r.summary) if r.summary is not None else None, r.wall_s)
