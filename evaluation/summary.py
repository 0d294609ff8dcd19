"""The headline numbers of one evaluation: model utility, and what needs the retain model's
results (forget quality, PrivLeak). Kept apart from the cached measurements: the same measurement
can be summarised against different references."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from .config import EvalConfig
from .metrics import bootstrap as BOOT
from .metrics import memorization as MEM
from .metrics import mia as MIA
from .metrics import tofu as TOFU
from .results import EvalResult, ForgetQuality, PrivLeak, Summary, TaskResult, Utility


@dataclass(frozen=True)
class Reference:
    """The retain model's side of forget quality and PrivLeak (harness.py `load_retain_reference` reads
    it from a measured model, a TOFU log directory or an `unlearn eval` file)."""
    truth_ratios: list
    privleak_auc: Optional[float]
    source: str
    forget_fingerprint: Optional[str]
    mia_aucs: dict = field(default_factory=dict)       # attack -> AUC (mia_aucs)
    text_losses: dict = field(default_factory=dict)    # MIA task -> per-passage mean loss (the reference attack)


# membership-inference attack -> its TextRecord field (metrics/mia.py); the passages: forget vs holdout
MIA_FIELDS = {"loss": "avg_loss", "zlib": "zlib", "min_k": "min_k", "min_k_pp": "min_k_pp"}
MIA_TASKS = ("privleak_forget", "privleak_holdout")


def text_losses(tasks: dict[str, TaskResult]) -> dict[str, list]:
    """Per MIA task, each passage's mean loss (None: not scored), in item order."""
    return {name: [it.avg_loss for it in tasks[name].items] for name in MIA_TASKS if name in tasks}


def _reference_side(losses: list, reference: list) -> list[float]:
    """The reference attack's scores of the passages both models scored (none when the sets differ)."""
    if len(losses) != len(reference):
        return []
    pairs = [(a, b) for a, b in zip(losses, reference) if a is not None and b is not None]
    return MIA.reference_scores([a for a, _ in pairs], [b for _, b in pairs])


def mia_aucs(tasks: dict[str, TaskResult], reference_losses: Optional[dict] = None) -> dict[str, float]:
    """{attack: AUC} of every membership-inference attack the passages' records allow (forget vs holdout,
    MUSE's convention: memorization.py `mia_auc`); `reference_losses` (the reference model's `text_losses`)
    adds the reference attack. Empty without both MIA tasks."""
    if not all(name in tasks for name in MIA_TASKS):
        return {}
    forget, holdout = (tasks[name] for name in MIA_TASKS)
    out = {}
    for attack, key in MIA_FIELDS.items():
        f, h = forget.column(key), holdout.column(key)
        if f and h:
            out[attack] = MEM.mia_auc(f, h)
    if reference_losses and all(name in reference_losses for name in MIA_TASKS):
        mine = text_losses(tasks)
        f, h = (_reference_side(mine[n], reference_losses[n]) for n in MIA_TASKS)
        if f and h:
            out["reference"] = MEM.mia_auc(f, h)
    return out


def privleak_auc(tasks: dict[str, TaskResult]) -> Optional[float]:
    if "privleak_forget" not in tasks or "privleak_holdout" not in tasks:
        return None
    f, h = tasks["privleak_forget"].column("min_k"), tasks["privleak_holdout"].column("min_k")
    return MEM.mia_auc(f, h) if f and h else None


def forget_truth_ratios(result: EvalResult) -> list[float]:
    forget = result.task("forget")
    return forget.column("truth_ratio") if forget else []


def reference_from_result(result: EvalResult, source: str) -> Reference:
    """The retain side of forget quality and PrivLeak, from an evaluation result."""
    forget = result.task("forget")
    losses = text_losses(result.tasks)
    return Reference(forget_truth_ratios(result), result.privleak_auc, source, forget.fingerprint if forget else None,
                     mia_aucs(result.tasks, losses), losses)


def _utility(result: EvalResult, resamples: int) -> Utility:
    mu = TOFU.model_utility({name: t.aggregate for name, t in result.tasks.items()})
    if mu["model_utility"] is None:
        return Utility(None, mu["components"], reason="no retain / utility set with probability, ROUGE and truth ratio")
    items = {name: result.tasks[name].items for name in BOOT.utility_sets() if name in result.tasks}
    got = BOOT.model_utility_interval(items, list(mu["components"]), resamples) if resamples else None
    return Utility(mu["model_utility"], mu["components"], got.to_json() if got else None)


def _forget_quality(result: EvalResult, retain: Optional[Reference], resamples: int) -> ForgetQuality:
    mine = forget_truth_ratios(result)
    profile = TOFU.truth_ratio_profile(mine) if mine else None
    if retain is None:
        return ForgetQuality(None, reason="no retain-model results: pass --retain-eval (an eval JSON, a TOFU log "
                                          "directory, or model:<retain model>)", truth_ratio=profile)
    if not mine or not retain.truth_ratios:
        return ForgetQuality(None, reason="truth ratios missing (forget items need paraphrased and perturbed answers)",
                             truth_ratio=profile)
    if retain.forget_fingerprint and retain.forget_fingerprint != result.tasks["forget"].fingerprint:
        return ForgetQuality(None, reason=f"retain results ({retain.source}) are for a different forget set",
                             truth_ratio=profile)
    fq = TOFU.forget_quality(mine, retain.truth_ratios)
    got = BOOT.forget_quality_interval(mine, retain.truth_ratios, resamples) if resamples else None
    return ForgetQuality(fq["forget_quality"], fq["ks_statistic"], got.to_json() if got else None, retain.source,
                         truth_ratio=profile)


def _privleak(result: EvalResult, retain: Optional[Reference]) -> PrivLeak:
    auc = result.privleak_auc
    attacks = _privleak_attacks(result, retain)
    ref_auc = retain.privleak_auc if retain else None
    if ref_auc is None:
        return PrivLeak(auc, None, "no retain-model AUC: pass --retain-eval", attacks)
    if ref_auc == 0:
        return PrivLeak(auc, None, "the retain model's AUC is 0: PrivLeak (relative to it) is undefined", attacks)
    return PrivLeak(auc, MEM.privleak(auc, ref_auc), attacks=attacks)


def _privleak_attacks(result: EvalResult, retain: Optional[Reference]) -> Optional[dict]:
    """Per membership-inference attack: its AUC, PrivLeak against the retain model's AUC of the same attack
    (None without one) and whether a runtime guard can move it (metrics/mia.py GUARD_MOVES)."""
    aucs = mia_aucs(result.tasks, retain.text_losses if retain else None)
    if not aucs:
        return None
    ref = retain.mia_aucs if retain else {}
    return {name: {"auc": auc, "privleak": MEM.privleak(auc, ref[name]) if ref.get(name) else None,
                   "guard_moves": MIA.GUARD_MOVES[name]} for name, auc in aucs.items()}


def summarize(result: EvalResult, cfg: EvalConfig, retain: Optional[Reference],
              resamples: int = BOOT.N_RESAMPLES) -> Summary:
    """Model utility, forget quality and PrivLeak of one measurement against `retain` (the retain model's
    side), with bootstrap intervals over items for the first two (`resamples` 0: none)."""
    return Summary(
        _utility(result, resamples) if "model_utility" in cfg.metrics else None,
        _forget_quality(result, retain, resamples) if "forget_quality" in cfg.metrics and "forget" in result.tasks
        else None,
        _privleak(result, retain) if result.privleak_auc is not None and "privleak" in cfg.metrics
        else None)
