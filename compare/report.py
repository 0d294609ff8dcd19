"""The comparison report: report.md, a self-contained report.html (tables + PNG plots inlined as
data URIs, no external resources) and the plots as files, all from results.json's content.

The report is its sections, listed here in order and nowhere else: SECTIONS, tables from the typed systems
(compare/report_tables.py), then DOC_SECTIONS, tables read from results.json as written
(compare/report_audit.py); PLOTS and DOC_PLOTS likewise (compare/report_plots.py, report_audit.py). A new
section is one function there and one entry here. What tables and plots share (cell formatting, headline
rows, who reaches the retain model) is compare/report_rows.py; this module renders markdown and HTML.

Tables: headline (forget quality, model utility, forget ROUGE-L, leak rate, neighbour retention,
serving and training cost), leak rate per attack category with a mark where a system reaches the
retain model's rate while keeping its neighbours, neighbour ROUGE-L per category, forget quality
beside the truth-ratio distribution it comes from, cost, wall time per stage, and which paradigm can move
which metric.
Plots: forget quality vs model utility, leak rate by attack and system, cost per system.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Callable

from .report_audit import audit_plots, audit_tables, verdict_html, verdict_markdown
from .report_plots import cost_plot, dial_plot, leak_plot, png, quality_plot, sequential_plot
from .report_rows import Systems, Table, _f, reaches_retain
from .report_tables import (ATTACK_TABLES, _empty_forget_quality, cost_table, dial_table, failed_table, finetune_table,
                            headline_table, leak_table, muse_table, neighbour_table, paradigm_table,
                            quantization_section, quantization_table, seeds_table, sequential_section,
                            sequential_table, spread_table, stage_table, truth_ratio_table)
from .results import Provenance, ReportDoc, parse_doc

__all__ = ["ATTACK_TABLES", "DOC_PLOTS", "DOC_SECTIONS", "PLOTS", "SECTIONS", "Table", "_empty_forget_quality", "_f",
           "html_page", "markdown", "md_table", "plots", "provenance_rows", "quantization_table", "reaches_retain",
           "sequential_table", "tables", "write_report"]

# the report's sections, in order: each gives its tables from the typed systems (none when it has nothing to show)
SECTIONS: tuple[Callable[[Systems], list[Table]], ...] = (
    headline_table, muse_table, leak_table, neighbour_table, quantization_section, finetune_table, sequential_section,
    truth_ratio_table, spread_table, seeds_table, dial_table, cost_table, stage_table, paradigm_table, failed_table)
# then these, read from results.json as written (in report.md and report.html, not in `tables`)
DOC_SECTIONS: tuple[Callable[[dict], list[Table]], ...] = (audit_tables,)
# the plots, in order (one without data is left out)
PLOTS: tuple[Callable[[Systems], dict[str, bytes]], ...] = (quality_plot, leak_plot, cost_plot, sequential_plot,
                                                            dial_plot)
DOC_PLOTS: tuple[Callable[..., dict[str, bytes]], ...] = (audit_plots,)


def tables(doc: dict) -> list[Table]:
    """[(title, header, rows, note)] of the typed sections (what `unlearn compare`, `attack` and `audit` print);
    report.md and report.html add DOC_SECTIONS' after them."""
    return _tables(parse_doc(doc))


def _tables(systems: Systems) -> list[Table]:
    return [table for section in SECTIONS for table in section(systems)]


def _all_tables(report: ReportDoc, doc: dict) -> list[Table]:
    """Every section's tables, the typed ones' first, then those read from results.json as it is."""
    return _tables(report.systems) + [table for section in DOC_SECTIONS for table in section(doc)]


def plots(doc: dict) -> dict[str, bytes]:
    """{file name: PNG bytes}; a plot without data is left out."""
    import matplotlib

    matplotlib.use("Agg")
    systems = parse_doc(doc)
    out: dict[str, bytes] = {}
    for plot in PLOTS:
        out.update(plot(systems))
    for doc_plot in DOC_PLOTS:
        out.update(doc_plot(doc, png))
    return out


def provenance_rows(p: Provenance) -> list[list[str]]:
    rows = [["started", p.started], ["wall seconds", str(p.wall_s)]]
    rows += [[f"version {k}", str(v)] for k, v in p.versions.items()]
    rows += [[f"data {k}", f"{v.source} ({v.items} items, sha256 {v.fingerprint})"] for k, v in p.data.items()]
    rows += [[f"weights {k}", f"sha256 {v}"] for k, v in p.fingerprints.items()]
    rows += [["probes", str(p.probes)]]
    return rows


def md_table(header, rows) -> str:
    esc = lambda s: str(s).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(map(esc, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(esc, r)) + " |" for r in rows]
    return "\n".join(lines)


def markdown(doc: dict, images: list[str]) -> str:
    import yaml

    report = ReportDoc.from_json(doc)
    parts = [f"# Unlearning comparison: {report.name}", "", *verdict_markdown(doc)]
    for title, header, rows, note in _all_tables(report, doc):
        parts += [f"## {title}", "", md_table(header, rows), ""]
        parts += [note, ""] if note else []
    parts += ["## Plots", ""] + [f"![{Path(i).stem}]({i})" for i in images] + [""]
    parts += ["## Reproduce", "", md_table(["what", "value"], provenance_rows(report.provenance)), "", "Config:", "",
              "```yaml", yaml.safe_dump(report.provenance.config, sort_keys=False).strip(), "```", ""]
    return "\n".join(parts)


def _html_table(header, rows) -> str:
    h = "".join(f"<th>{html.escape(str(c))}</th>" for c in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


def html_page(doc: dict, pngs: dict[str, bytes]) -> str:
    import yaml

    css = ("body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;margin:.5em 0 1em}"
           "td,th{border:1px solid #bbb;padding:3px 7px;font-size:13px;text-align:right}td:first-child,th{text-align:left}"
           "th{background:#eee}img{max-width:100%;border:1px solid #ddd;margin:.5em 0}pre{background:#f6f6f6;padding:1em}"
           ".note{color:#555;font-size:12px;white-space:pre-line}")
    report = ReportDoc.from_json(doc)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>Unlearning comparison: "
             f"{html.escape(report.name)}</title><style>{css}</style></head><body>",
             f"<h1>Unlearning comparison: {html.escape(report.name)}</h1>", *verdict_html(doc)]
    for title, header, rows, note in _all_tables(report, doc):
        parts += [f"<h2>{html.escape(title)}</h2>", _html_table(header, rows)]
        if note:
            parts.append(f"<p class='note'>{html.escape(note)}</p>")
    parts.append("<h2>Plots</h2>")
    for name, data in pngs.items():
        parts.append(f"<figure><img alt='{html.escape(Path(name).stem)}' "
                     f"src='data:image/png;base64,{base64.b64encode(data).decode()}'></figure>")
    parts += ["<h2>Reproduce</h2>", _html_table(["what", "value"], provenance_rows(report.provenance)),
              "<pre>" + html.escape(yaml.safe_dump(report.provenance.config, sort_keys=False)) + "</pre></body></html>"]
    return "\n".join(parts)


def write_report(doc: dict, out: Path) -> dict[str, Path]:
    """report.md (+ plots/*.png beside it) and the self-contained report.html."""
    out = Path(out)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    pngs = plots(doc)
    for name, data in pngs.items():
        (out / "plots" / name).write_bytes(data)
    (out / "report.md").write_text(markdown(doc, [f"plots/{n}" for n in pngs]))
    (out / "report.html").write_text(html_page(doc, pngs))
    return {"md": out / "report.md", "html": out / "report.html", "json": out / "results.json"}
