"""TOFU's official per-item evaluation logs: read them, aggregate them, write ours in the same format.

A log directory holds up to four JSON files, one per evaluation set; each maps a metric name to
{item index (string): value}:

    eval_log_forget.json               forget set
    eval_log.json                      retain set
    eval_real_author_wo_options.json   real authors
    eval_real_world_wo_options.json    world facts

Per-item fields: avg_gt_loss, gt_loss, num_token_gt, generated_text ([prompt, generated, gold]),
rouge1_recall, rougeL_recall, avg_paraphrased_loss, paraphrased_loss, num_token_paraphrased,
average_perturb_loss (list), perturb_loss (list), num_token_perturb (list), truth_ratio.
TOFU's own runs nest them as `<run>/eval_results/ds_size300/`; any directory that contains exactly
one folder with `eval_log_forget.json` is accepted.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import DataError
from ..files import write_json_atomic
from .metrics import tofu as M

LOG_FILES = {
    "forget": "eval_log_forget.json",
    "retain": "eval_log.json",
    "real_authors": "eval_real_author_wo_options.json",
    "world_facts": "eval_real_world_wo_options.json",
}
OPTION_TASKS = ("real_authors", "world_facts")  # probability normalised over the answer options
FORGET_KEYS = ("avg_paraphrased_loss", "average_perturb_loss")
AGGREGATE_KEYS = ("avg_gt_loss", "rougeL_recall", "avg_paraphrased_loss", "average_perturb_loss")


def find_log_dir(path: str | Path) -> Path:
    """The folder holding `eval_log_forget.json`: `path` itself or its only descendant that has one."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"TOFU log directory {str(path)!r} does not exist")
    if (path / LOG_FILES["forget"]).is_file():
        return path
    found = sorted(p.parent for p in path.rglob(LOG_FILES["forget"]))
    if not found:
        raise DataError(f"{path}: no {LOG_FILES['forget']} found (a TOFU log directory needs at least that file)")
    if len(found) > 1:
        raise DataError(f"{path}: several TOFU log folders inside; name one: {[str(f) for f in found]}")
    return found[0]


def _load(path: Path, required: tuple[str, ...]) -> dict:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected an object mapping metric names to per-item values")
    missing = [k for k in required if k not in data]
    if missing:
        raise DataError(f"{path}: missing key(s) {missing}; present: {sorted(data)}")
    for key in required:
        if not isinstance(data[key], dict) or not data[key]:
            raise DataError(f"{path}: '{key}' must map item indices to values")
    return data


def _values(log: dict, key: str) -> list:
    """Per-item values ordered by integer index (TOFU's files keep insertion order; sort anyway)."""
    return [v for _, v in sorted(log[key].items(), key=lambda kv: int(kv[0]))]


def read_logs(path: str | Path, require_all: bool = False) -> dict[str, dict]:
    """{task: raw log} for the files present (forget is always required)."""
    folder = find_log_dir(path)
    logs = {}
    for task, name in LOG_FILES.items():
        file = folder / name
        if file.is_file():
            logs[task] = _load(file, AGGREGATE_KEYS if require_all or task != "forget" else FORGET_KEYS)
        elif require_all:
            raise DataError(f"{folder}: missing {name} (needed for model utility)")
    logs["forget"] = logs.get("forget") or _load(folder / LOG_FILES["forget"], FORGET_KEYS)
    return logs


def truth_ratios(log: dict) -> list[float]:
    """Per-item R = P(perturbed)/P(paraphrased) from a log's mean token losses."""
    return [M.truth_ratio(para, pert) for para, pert in
            zip(_values(log, "avg_paraphrased_loss"), _values(log, "average_perturb_loss"))]


def aggregate_task(task: str, log: dict) -> dict[str, float]:
    """Probability, ROUGE-L recall and truth-ratio score of one set, as TOFU aggregates them."""
    gt = _values(log, "avg_gt_loss")
    if task in OPTION_TASKS:
        probs = [M.option_probability(t, f) for t, f in zip(gt, _values(log, "average_perturb_loss"))]
    else:
        probs = [M.answer_probability(x) for x in gt]
    ratios = truth_ratios(log)
    score = M.forget_truth_ratio_score if task == "forget" else M.retain_truth_ratio_score
    rouge = _values(log, "rougeL_recall")
    return {"probability": sum(probs) / len(probs), "rougeL_recall": sum(rouge) / len(rouge),
            "truth_ratio": score(ratios), "n_items": len(gt)}


def summarize_logs(path: str | Path) -> dict:
    logs = read_logs(path)
    aggregates = {t: aggregate_task(t, log) for t, log in logs.items()
                  if all(k in log for k in AGGREGATE_KEYS)}
    return {"tasks": aggregates, **M.model_utility(aggregates)}


def forget_quality_from_logs(unlearned: str | Path, retain: str | Path) -> dict:
    """TOFU's forget quality between two log directories (KS test on forget-set truth ratios)."""
    a = truth_ratios(read_logs(unlearned)["forget"])
    b = truth_ratios(read_logs(retain)["forget"])
    return {**M.forget_quality(a, b), "n_unlearned": len(a), "n_retain": len(b)}


def write_logs(items_by_task: dict[str, list[dict]], out_dir: str | Path) -> Path:
    """Write per-item records (TOFU field names) as TOFU log files; each file renamed into place whole."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for task, items in items_by_task.items():
        if task not in LOG_FILES:
            continue
        keys = [k for k in items[0] if k in _TOFU_FIELDS] if items else []
        log = {k: {str(i): item[k] for i, item in enumerate(items)} for k in keys}
        write_json_atomic(out / LOG_FILES[task], log, indent=None)
    return out


_TOFU_FIELDS = {"avg_gt_loss", "gt_loss", "num_token_gt", "generated_text", "rouge1_recall", "rougeL_recall",
                "average_perturb_loss", "avg_paraphrased_loss", "truth_ratio", "paraphrased_loss", "perturb_loss",
                "num_token_paraphrased", "num_token_perturb"}
