"""The headline numbers of one evaluation: model utility, and what needs the retain model's
results (forget quality, PrivLeak). Kept apart from the cached measurements: the same measurement
can be summarised against different references."""

from __future__ import annotations

from typing import Optional

from .config import EvalConfig
from .metrics import bootstrap as BOOT
from .metrics import memorization as MEM
from .metrics import tofu as TOFU


def privleak_auc(tasks: dict) -> Optional[float]:
    if "privleak_forget" not in tasks or "privleak_holdout" not in tasks:
        return None
    f = [it["min_k"] for it in tasks["privleak_forget"]["items"] if "min_k" in it]
    h = [it["min_k"] for it in tasks["privleak_holdout"]["items"] if "min_k" in it]
    return MEM.mia_auc(f, h) if f and h else None


def forget_truth_ratios(result: dict) -> list[float]:
    items = result.get("tasks", {}).get("forget", {}).get("items", [])
    return [it["truth_ratio"] for it in items if it.get("truth_ratio") is not None]


def reference_from_result(result: dict, source: str) -> dict:
    """The retain side of forget quality and PrivLeak, from an evaluation result (harness.py
    `load_retain_reference` reads the other kinds of reference)."""
    return {"truth_ratios": forget_truth_ratios(result), "privleak_auc": result.get("privleak_auc"),
            "source": source, "forget_fingerprint": result["tasks"].get("forget", {}).get("fingerprint")}


def _utility_interval(result: dict, components: dict, resamples: int) -> Optional[dict]:
    items = {name: result["tasks"][name]["items"] for name in BOOT.utility_sets() if name in result["tasks"]}
    got = BOOT.model_utility_interval(items, list(components), resamples) if resamples else None
    return got.to_json() if got else None


def summarize(result: dict, cfg: EvalConfig, retain: Optional[dict], resamples: int = BOOT.N_RESAMPLES) -> dict:
    """Model utility, forget quality and PrivLeak of one measurement against `retain` (the retain model's
    side), with bootstrap intervals over items for the first two (`resamples` 0: none)."""
    tasks = result["tasks"]
    aggs = {name: t["aggregate"] for name, t in tasks.items()}
    summary: dict = {}
    if "model_utility" in cfg.metrics:
        mu = TOFU.model_utility(aggs)
        summary["model_utility"] = mu["model_utility"]
        summary["model_utility_components"] = mu["components"]
        if mu["model_utility"] is not None:
            summary["model_utility_interval"] = _utility_interval(result, mu["components"], resamples)
        if mu["model_utility"] is None:
            summary["model_utility_reason"] = "no retain / utility set with probability, ROUGE and truth ratio"
    if "forget_quality" in cfg.metrics and "forget" in tasks:
        mine = forget_truth_ratios(result)
        if mine:
            summary["forget_truth_ratio"] = TOFU.truth_ratio_profile(mine)
        if retain is None:
            summary["forget_quality"] = None
            summary["forget_quality_reason"] = ("no retain-model results: pass --retain-eval (an eval JSON, a TOFU "
                                                "log directory, or model:<retain model>)")
        elif not mine or not retain["truth_ratios"]:
            summary["forget_quality"] = None
            summary["forget_quality_reason"] = "truth ratios missing (forget items need paraphrased and perturbed answers)"
        elif retain.get("forget_fingerprint") and retain["forget_fingerprint"] != tasks["forget"]["fingerprint"]:
            summary["forget_quality"] = None
            summary["forget_quality_reason"] = f"retain results ({retain['source']}) are for a different forget set"
        else:
            fq = TOFU.forget_quality(mine, retain["truth_ratios"])
            summary.update(fq)
            got = BOOT.forget_quality_interval(mine, retain["truth_ratios"], resamples) if resamples else None
            summary["forget_quality_interval"] = got.to_json() if got else None
            summary["forget_quality_reference"] = retain["source"]
    if result.get("privleak_auc") is not None and "privleak" in cfg.metrics:
        summary["mia_auc"] = result["privleak_auc"]
        ref_auc = (retain or {}).get("privleak_auc")
        if ref_auc is None:
            summary["privleak"] = None
            summary["privleak_reason"] = "no retain-model AUC: pass --retain-eval"
        elif ref_auc == 0:
            summary["privleak"] = None
            summary["privleak_reason"] = "the retain model's AUC is 0: PrivLeak (relative to it) is undefined"
        else:
            summary["privleak"] = MEM.privleak(result["privleak_auc"], ref_auc)
    return summary


_reference = reference_from_result   # the name compare/run.py imports
