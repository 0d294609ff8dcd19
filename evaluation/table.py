"""Plain-text tables of evaluation results (the JSON file holds everything; this is the glance)."""

from __future__ import annotations

from .results import EvalResult, Summary

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


def _summary_lines(s: Summary) -> list[str]:
    out = []
    if s.utility is not None:
        out.append(f"model utility   {_fmt(s.utility.value)}  ({len(s.utility.components)} components"
                   f"{_spread(s.utility.interval)})")
    fq = s.forget
    if fq is not None and fq.value is None:
        out.append(f"forget quality  missing: {fq.reason}")
    elif fq is not None:
        out.append(f"forget quality  {_fmt(fq.value)}  (KS statistic {fq.ks_statistic:.4f}; "
                   f"reference {fq.reference}{_spread(fq.interval)})")
    if fq is not None and fq.truth_ratio is not None:
        tr = fq.truth_ratio
        out.append(f"forget R        median {tr['median']:.3g} (quartiles {tr['q1']:.3g}-{tr['q3']:.3g}); "
                   f"false answers preferred on {tr['prefers_false']:.0%} of {tr['n']} items")
    if s.privleak is not None:
        pl = s.privleak
        leak = _fmt(pl.value) if pl.value is not None else f"missing: {pl.reason}"
        out.append(f"MIA AUC         {_fmt(pl.mia_auc)}   PrivLeak {leak}")
    return out


def results_table(result: EvalResult) -> str:
    tasks = result.tasks
    cols = [(k, h) for k, h in COLUMNS if any(k in t.aggregate for t in tasks.values())]
    cols += sorted({(k, "Min-" + k[4:]) for t in tasks.values() for k in t.aggregate if k.startswith("min_")})
    rows = [["set", "n"] + [h for _, h in cols]]
    for name, t in tasks.items():
        rows.append([name, str(t.aggregate["n_items"])] + [_fmt(t.aggregate.get(k)) for k, _ in cols])
    out = [f"{result.model['ref']} on {result.benchmark}", render(rows), ""]
    out += _summary_lines(result.summary or Summary())
    if result.timing or result.wall_s is not None:
        parts = [f"{k[:-2]} {v:.0f}s" for k, v in result.timing.items() if k.endswith("_s")]
        out.append(f"time            {result.wall_s or 0:.0f}s" + (f" ({', '.join(parts)})" if parts else ""))
    return "\n".join(out)


def forget_quality_table(fq: dict) -> str:
    return render([["forget quality (KS p-value)", "KS statistic", "n unlearned", "n retain"],
                   [f"{fq['forget_quality']:.4g}", f"{fq['ks_statistic']:.4f}", str(fq["n_unlearned"]),
                    str(fq["n_retain"])]])
