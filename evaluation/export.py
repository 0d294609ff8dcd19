"""An `unlearn eval` result in open-unlearning's layout (locuslab/open-unlearning), so its numbers
line up with that toolkit's published tables and its tools read them.

open-unlearning's evaluator (src/evals/base.py) writes two files per suite:

    TOFU_EVAL.json      {metric: {"agg_value": x, "value_by_index": {"<item>": {...}}}}, every metric it
                        computed, the intermediate ones under their pre_compute names, keys sorted
    TOFU_SUMMARY.json   {metric: agg_value} for the suite's top-level metrics that have a value

Metric names and per-item fields, from src/evals/metrics/{memorization,privacy,utility}.py and
configs/eval/tofu_metrics/*.yaml (prefixes: forget, retain, ra = real authors, wf = world facts):

    <p>_Q_A_Prob              {prob, avg_loss}         prob = exp(-avg_loss), answer tokens only
    <p>_Q_A_PARA_Prob         {prob, avg_loss}         paraphrased answer (forget, retain)
    <p>_Q_A_PERT_Prob         {prob: [..], avg_loss: [..]}  perturbed answers
    ra/wf_Q_A_Prob_normalised {prob}                   P(true) / (P(true) + sum P(false))
    <p>_Q_A_ROUGE             {rouge1_recall, rougeL_f1, rougeL_recall, input, ground_truth, generation};
                              agg: mean ROUGE-L recall
    <p>_Truth_Ratio           {score}                  score = P(perturbed) / P(paraphrased) (TOFU's R);
                              agg: mean(min(R, 1/R)) on forget, mean(max(0, 1-R)) elsewhere;
                              forget's is also stored as `forget_truth_ratio`, the name forget_quality's
                              reference_logs read from a retain model's TOFU_EVAL.json
    forget_quality            agg: KS-test p-value against the retain model's forget truth ratios
    model_utility             agg: harmonic mean of retain/ra/wf probability (normalised for ra/wf),
                              ROUGE-L recall and truth ratio
    extraction_strength, exact_memorization   {score} on the forget set
    mia_min_k                 agg: AUC with forget labelled 0 (open-unlearning's convention, = 1 - ours)
    privleak                  agg: the same number as ours ((auc - ref) / ref * 100 in our convention)

The values are this project's measurements (evaluation/scoring.py), renamed, not recomputed: the
per-item numbers are those of the result JSON. "input" is the question (open-unlearning stores the
chat-formatted prompt). MUSE results are not written in this layout.
"""

from __future__ import annotations

import math
from pathlib import Path

from ..errors import DataError
from ..files import write_json_atomic
from .metrics import tofu as TOFU
from .results import EvalResult

SUITE = "TOFU"
TASK_PREFIX = {"forget": "forget", "retain": "retain", "real_authors": "ra", "world_facts": "wf"}
# configs/eval/tofu.yaml's default metric list: the top-level metrics, which the summary holds
SUMMARY_METRICS = ("extraction_strength", "forget_Q_A_Prob", "forget_Q_A_ROUGE", "forget_Truth_Ratio",
                   "forget_quality", "model_utility", "privleak")


def _clean(value):
    """JSON without NaN: open-unlearning marks a missing per-item value None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def _mean(values) -> float | None:
    finite = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return sum(finite) / len(finite) if finite else None


def _metric(per_item: list[dict | None], agg: float | None) -> dict:
    return {"agg_value": _clean(agg),
            "value_by_index": {str(i): ({k: _clean(v) for k, v in item.items()} if item is not None else None)
                               for i, item in enumerate(per_item)}}


def _prob(loss: float) -> dict:
    return {"prob": math.exp(-loss), "avg_loss": loss}


def _task_metrics(prefix: str, kind: str, items: list[dict]) -> dict:
    out = {}
    has = lambda key: items and all(key in it for it in items)  # noqa: E731
    if has("avg_gt_loss"):
        probs = [_prob(it["avg_gt_loss"]) for it in items]
        out[f"{prefix}_Q_A_Prob"] = _metric(probs, _mean(p["prob"] for p in probs))
        if kind == "options" and has("probability"):
            out[f"{prefix}_Q_A_Prob_normalised"] = _metric([{"prob": it["probability"]} for it in items],
                                                           _mean(it["probability"] for it in items))
    if kind == "qa" and has("avg_paraphrased_loss"):
        para = [_prob(it["avg_paraphrased_loss"]) for it in items]
        out[f"{prefix}_Q_A_PARA_Prob"] = _metric(para, _mean(p["prob"] for p in para))
    if has("average_perturb_loss"):
        pert = [{"prob": [math.exp(-x) for x in it["average_perturb_loss"]], "avg_loss": list(it["average_perturb_loss"])}
                for it in items]
        out[f"{prefix}_Q_A_PERT_Prob"] = _metric(pert, _mean(_mean(p["prob"]) for p in pert))
    if has("rougeL_recall"):
        rouge = [{"rouge1_recall": it.get("rouge1_recall"), "rougeL_f1": it.get("rougeL_f1"),
                  "rougeL_recall": it["rougeL_recall"], "input": it.get("question"), "ground_truth": it.get("answer"),
                  "generation": (it.get("generated_text") or [None, None])[1]} for it in items]
        out[f"{prefix}_Q_A_ROUGE"] = _metric(rouge, _mean(it["rougeL_recall"] for it in items))
    if has("truth_ratio"):
        ratios = [it["truth_ratio"] for it in items]
        score = TOFU.forget_truth_ratio_score if prefix == "forget" else TOFU.retain_truth_ratio_score
        out[f"{prefix}_Truth_Ratio"] = _metric([{"score": r} for r in ratios], score(ratios))
        if prefix == "forget":
            out["forget_truth_ratio"] = out["forget_Truth_Ratio"]
    if prefix == "forget":
        for key in ("extraction_strength", "exact_memorization"):
            if has(key):
                out[key] = _metric([{"score": it[key]} for it in items], _mean(it[key] for it in items))
    return out


def open_unlearning_logs(result: EvalResult) -> dict:
    """TOFU_EVAL.json's content for an `unlearn eval` result (with its `summary`)."""
    tasks = result.tasks
    forget = tasks.get("forget")
    if forget is None or forget.kind != "qa" or any(t.kind in ("verbmem", "knowmem") for t in tasks.values()):
        raise DataError(f"open-unlearning export: benchmark {result.benchmark!r} is not TOFU-shaped (it "
                        "needs a 'forget' QA task and no MUSE tasks); valid benchmarks: tofu, tofu-mini, synthetic, files")
    logs: dict = {}
    for name, prefix in TASK_PREFIX.items():
        if name in tasks:   # the records as JSON: this layout is written field by field from them
            logs.update(_task_metrics(prefix, tasks[name].kind, tasks[name].to_json()["items"]))
    summary = result.summary.to_json() if result.summary else {}
    for key in ("forget_quality", "model_utility", "privleak"):
        if summary.get(key) is not None:
            logs[key] = {"agg_value": summary[key]}
    if result.privleak_auc is not None:
        auc = 1.0 - result.privleak_auc
        logs["mia_min_k"] = {"agg_value": auc, "auc": auc}
    return dict(sorted(logs.items()))


def open_unlearning_summary(logs: dict) -> dict:
    """TOFU_SUMMARY.json: the top-level metrics' agg_value, those without one left out (as base.py)."""
    return {k: logs[k]["agg_value"] for k in sorted(SUMMARY_METRICS)
            if k in logs and logs[k].get("agg_value") is not None}


def export_open_unlearning(result: EvalResult, out_dir: str | Path) -> tuple[Path, Path]:
    """Write TOFU_EVAL.json and TOFU_SUMMARY.json into `out_dir` (each renamed into place whole)."""
    logs = open_unlearning_logs(result)
    out = Path(out_dir)
    return (write_json_atomic(out / f"{SUITE}_EVAL.json", logs, indent=4),
            write_json_atomic(out / f"{SUITE}_SUMMARY.json", open_unlearning_summary(logs), indent=4))
