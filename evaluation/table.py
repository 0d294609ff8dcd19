"""Plain-text tables of evaluation results (the JSON file holds everything; this is the glance)."""

from __future__ import annotations

COLUMNS = [("probability", "prob"), ("rougeL_recall", "ROUGE-L"), ("truth_ratio", "truth ratio"),
           ("exact_memorization", "EM"), ("extraction_strength", "ES"),
           ("rougeL_recall_paraphrased_question", "ROUGE-L para-Q"), ("rougeL_f1", "ROUGE-L F1")]


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}" if (abs(v) < 1e-3 and v != 0) else f"{v:.4f}"
    return str(v)


def render(rows: list[list[str]]) -> str:
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    lines = []
    for n, r in enumerate(rows):
        lines.append("  ".join(cell.ljust(w) if c == 0 else cell.rjust(w) for c, (cell, w) in enumerate(zip(r, widths))))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _spread(interval) -> str:
    """A bootstrap interval over items, as the table shows it ('' when there is none)."""
    if not interval:
        return ""
    return f"; 95% over items {_fmt(interval['low'])}-{_fmt(interval['high'])}"


def results_table(result: dict) -> str:
    tasks = result["tasks"]
    cols = [(k, h) for k, h in COLUMNS if any(k in t["aggregate"] for t in tasks.values())]
    cols += sorted({(k, "Min-" + k[4:]) for t in tasks.values() for k in t["aggregate"] if k.startswith("min_")})
    rows = [["set", "n"] + [h for _, h in cols]]
    for name, t in tasks.items():
        rows.append([name, str(t["aggregate"]["n_items"])] + [_fmt(t["aggregate"].get(k)) for k, _ in cols])
    out = [f"{result['model']['ref']} on {result['benchmark']}", render(rows), ""]
    s = result.get("summary", {})
    if "model_utility" in s:
        out.append(f"model utility   {_fmt(s['model_utility'])}  ({len(s.get('model_utility_components', {}))} components"
                   f"{_spread(s.get('model_utility_interval'))})")
    if "forget_quality" in s:
        if s["forget_quality"] is None:
            out.append(f"forget quality  missing: {s.get('forget_quality_reason')}")
        else:
            out.append(f"forget quality  {_fmt(s['forget_quality'])}  (KS statistic {s['ks_statistic']:.4f}; "
                       f"reference {s.get('forget_quality_reference')}{_spread(s.get('forget_quality_interval'))})")
    if "forget_truth_ratio" in s:
        tr = s["forget_truth_ratio"]
        out.append(f"forget R        median {tr['median']:.3g} (quartiles {tr['q1']:.3g}-{tr['q3']:.3g}); "
                   f"false answers preferred on {tr['prefers_false']:.0%} of {tr['n']} items")
    if "mia_auc" in s:
        leak = _fmt(s.get("privleak")) if s.get("privleak") is not None else f"missing: {s.get('privleak_reason')}"
        out.append(f"MIA AUC         {_fmt(s['mia_auc'])}   PrivLeak {leak}")
    timing = result.get("timing", {})
    if timing or "wall_s" in result:
        parts = [f"{k[:-2]} {v:.0f}s" for k, v in timing.items() if k.endswith("_s")]
        out.append(f"time            {result.get('wall_s', 0):.0f}s" + (f" ({', '.join(parts)})" if parts else ""))
    return "\n".join(out)


def forget_quality_table(fq: dict) -> str:
    return render([["forget quality (KS p-value)", "KS statistic", "n unlearned", "n retain"],
                   [f"{fq['forget_quality']:.4g}", f"{fq['ks_statistic']:.4f}", str(fq["n_unlearned"]),
                    str(fq["n_retain"])]])
