"""The comparison report: report.md, a self-contained report.html (tables + PNG plots inlined as
data URIs, no external resources) and the plots as files, all from results.json's content.

Tables: headline (forget quality, model utility, forget ROUGE-L, leak rate, neighbour retention,
serving and training cost), leak rate per attack category with a mark where a system reaches the
retain model's rate while keeping its neighbours, neighbour ROUGE-L per category, forget quality
beside the truth-ratio distribution it comes from, cost, and which paradigm can move which metric.
Plots: forget quality vs model utility, leak rate by attack and system, cost per system.
"""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path
from typing import Optional

# metric -> (what it measures, can weight edits move it, can a token guard, can agents)
PARADIGMS = {
    "forget quality / truth ratio / answer probability / MIA": (
        "teacher-forced probabilities", "yes", "yes: mask + penalty at every position of flagged prompts",
        "no: a text rewriter never changes the engine's probabilities (the engine's numbers are reported)"),
    "forget / paraphrase ROUGE-L": ("greedy answers through the deployed path", "yes", "yes", "yes"),
    "model utility": ("probability, ROUGE-L, truth ratio on retain / utility sets", "yes",
                      "yes, on prompts the classifier flags", "ROUGE-L part only"),
    "attack leak rate / neighbour retention": ("replies to attack probes", "yes", "yes", "yes"),
    "relearning attack": ("fine-tune the weights on half the forget facts", "yes (the threat model)",
                          "n/a: the attacker has no served weights", "n/a"),
    "benign relearning attack": ("fine-tune the weights on a few texts naming no forget subject",
                                 "yes (the threat model)", "n/a: the attacker has no served weights", "n/a"),
    "quantization attack": ("the checkpoint rounded to INT8 / INT4, then the forget questions and answer probability",
                            "yes (the threat model)", "yes: the guard served over the quantized checkpoint",
                            "n/a: measured on the engine without the agents"),
}
# the tables `unlearn attack` prints (titles start so)
ATTACK_TABLES = ("Leak rate per attack category", "Neighbour probes", "Quantization attack")
RETAIN_TOLERANCE = 0.05     # "reaches the retain model's leak rate": within this of it
KEEP_NEIGHBOURS = 0.9       # "keeps neighbour retention": at least this share of the target's


def _f(x, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if isinstance(x, float) and 0 < abs(x) < 10 ** -digits:
        return f"{x:.1e}"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def _or_na(x: Optional[float]) -> str:
    """A rate, or n/a where the attack does not apply (or did not run)."""
    return "n/a" if x is None else _f(x, 2)


def _get(d: Optional[dict], *keys):
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def categories(doc: dict) -> list[str]:
    seen: dict = {}
    for res in doc["systems"].values():
        for c in (_get(res, "attacks", "by_category", "forget") or {}):
            if c != "all":
                seen[c] = None
    return list(seen)


def neighbour_retention(doc: dict, name: str) -> Optional[float]:
    """Neighbour-probe ROUGE-L relative to the target's (1.0 = keeps them as well as the target)."""
    mine = _get(doc["systems"].get(name), "attacks", "by_category", "neighbour", "all", "rouge")
    ref = _get(doc["systems"].get("target"), "attacks", "by_category", "neighbour", "all", "rouge")
    if mine is None or not ref:
        return None
    return mine / ref


def unlearning_seconds(res: dict) -> Optional[float]:
    """The weight-level unlearning run's training time (the target and retain fine-tunes are the
    benchmark's set-up, not an unlearning cost)."""
    if res.get("base") in ("target", "retain"):
        return None
    return _get(res, "training", "train_seconds")


def _plus(a: Optional[float], b: Optional[float]) -> Optional[float]:
    """a + b with a missing part counted as 0; None when both are missing."""
    return None if a is None and b is None else (a or 0) + (b or 0)


def headline_rows(doc: dict) -> list[dict]:
    rows = []
    for name, res in doc["systems"].items():
        if res.get("status") != "ok":
            rows.append({"system": name, "kind": res.get("kind"), "failed": res.get("reason")})
            continue
        s = res.get("summary") or {}
        agg = res.get("aggregates") or {}
        serving = _get(res, "attacks", "serving") or {}
        rows.append({
            "system": name, "kind": res.get("kind"),
            "forget_quality": s.get("forget_quality"), "forget_quality_reason": s.get("forget_quality_reason"),
            "model_utility": s.get("model_utility"),
            "forget_rouge": _get(agg, "forget", "rougeL_recall"),
            "para_rouge": _get(agg, "forget", "rougeL_recall_paraphrased_question"),
            "leak": _get(res, "attacks", "by_category", "forget", "all", "leak_rate"),
            "relearn_leak": _get(res, "relearn", "after", "leak_rate"),
            "neighbour_rouge": _get(res, "attacks", "by_category", "neighbour", "all", "rouge"),
            "neighbour_retention": neighbour_retention(doc, name),
            "tokens_per_s": serving.get("tokens_per_s"), "latency_s": serving.get("latency_median_s"),
            "train_s": unlearning_seconds(res), "guard_build_s": _get(res, "guard", "build_seconds"),
        })
        rows[-1]["build_s"] = _plus(rows[-1]["train_s"], rows[-1]["guard_build_s"])
    return rows


def reaches_retain(doc: dict) -> dict:
    """{system: {category: True/False/None}}: leak rate within RETAIN_TOLERANCE of the retain
    model's, with neighbour retention >= KEEP_NEIGHBOURS."""
    retain = _get(doc["systems"].get("retain"), "attacks", "by_category", "forget") or {}
    out: dict = {}
    for name, res in doc["systems"].items():
        by = _get(res, "attacks", "by_category", "forget")
        if res.get("status") != "ok" or not by or not retain:
            continue
        retention = neighbour_retention(doc, name)
        keeps = None if retention is None else retention >= KEEP_NEIGHBOURS   # unknown: no mark either way
        out[name] = {c: (None if keeps is None or _get(retain, c, "leak_rate") is None or
                         _get(by, c, "leak_rate") is None else
                         bool(by[c]["leak_rate"] <= retain[c]["leak_rate"] + RETAIN_TOLERANCE and keeps))
                     for c in list(by)}
        rl, rl_ret = _get(res, "relearn", "after", "leak_rate"), _get(doc["systems"].get("retain"), "relearn", "after", "leak_rate")
        if rl is not None and rl_ret is not None and keeps is not None:
            out[name]["relearn"] = bool(rl <= rl_ret + RETAIN_TOLERANCE and keeps)
    return out


# ----------------------------------------------------------------------------- plots
def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def plots(doc: dict) -> dict[str, bytes]:
    """{file name: PNG bytes}; a plot without data is left out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: dict[str, bytes] = {}
    rows = [r for r in headline_rows(doc) if "failed" not in r]
    pts = [r for r in rows if r["forget_quality"] is not None and r["model_utility"] is not None]
    if pts:
        fig, ax = plt.subplots(figsize=(6.5, 4.5))
        for r in pts:
            ax.scatter(r["model_utility"], r["forget_quality"], s=40)
            ax.annotate(r["system"], (r["model_utility"], r["forget_quality"]), fontsize=7,
                        xytext=(4, 3), textcoords="offset points")
        ax.set_yscale("log")
        ax.set_xlabel("model utility (higher is better)")
        ax.set_ylabel("forget quality (KS p-value vs retain model; higher is better)")
        ax.axhline(0.05, color="grey", lw=0.8, ls="--")
        ax.set_title("Forget quality vs model utility")
        out["forget_quality_vs_utility.png"] = _png(fig)
    cats = categories(doc)
    names = [r["system"] for r in rows if _get(doc["systems"][r["system"]], "attacks", "by_category", "forget")]
    if cats and names:
        import numpy as np

        cols = cats + ["relearn"]
        grid = np.full((len(names), len(cols)), np.nan)
        for i, n in enumerate(names):
            by = doc["systems"][n]["attacks"]["by_category"]["forget"]
            for j, c in enumerate(cats):
                v = _get(by, c, "leak_rate")
                grid[i, j] = np.nan if v is None else v
            v = _get(doc["systems"][n], "relearn", "after", "leak_rate")
            grid[i, -1] = np.nan if v is None else v
        fig, ax = plt.subplots(figsize=(1.0 + 0.75 * len(cols), 1.0 + 0.42 * len(names)))
        im = ax.imshow(grid, vmin=0, vmax=1, cmap="Reds", aspect="auto")
        ax.set_xticks(range(len(cols)), cols, rotation=40, ha="right", fontsize=8)
        ax.set_yticks(range(len(names)), names, fontsize=8)
        for i in range(len(names)):
            for j in range(len(cols)):
                ax.text(j, i, "n/a" if np.isnan(grid[i, j]) else f"{grid[i, j]:.2f}", ha="center", va="center",
                        fontsize=7, color="black" if np.isnan(grid[i, j]) or grid[i, j] < 0.6 else "white")
        fig.colorbar(im, ax=ax, label="leak rate")
        ax.set_title("Leak rate by attack category and system")
        out["leak_rate_by_attack.png"] = _png(fig)
    cost = [r for r in rows if r["tokens_per_s"] is not None or r["train_s"] is not None]
    if cost:
        fig, axes = plt.subplots(1, 3, figsize=(12, 0.8 + 0.38 * len(cost)), sharey=True)
        labels = [r["system"] for r in cost]
        for ax, key, title in ((axes[0], "build_s", "unlearning training (s)"),
                               (axes[1], "tokens_per_s", "attack batch throughput (tok/s)"),
                               (axes[2], "latency_s", "latency, one request (s)")):
            vals = [r[key] or 0 for r in cost]
            ax.barh(labels, vals, color="#4c72b0")
            ax.set_title(title, fontsize=9)
            ax.tick_params(labelsize=8)
        axes[0].invert_yaxis()
        fig.suptitle("Cost per system (training = unlearning run + guard build)", fontsize=10)
        out["cost_per_system.png"] = _png(fig)
    out.update(sequential_plot(doc))
    return out


# ----------------------------------------------------------------------------- tables
def tables(doc: dict) -> list[tuple[str, list[str], list[list[str]], str]]:
    """[(title, header, rows, note)] shared by the markdown and the HTML."""
    out = []
    head = headline_rows(doc)
    rows, notes = [], []
    for r in head:
        if "failed" in r:
            rows.append([r["system"], r["kind"] or "", "FAILED"] + [""] * 9 + [r["failed"]])
            continue
        fq = _f(r["forget_quality"], 4)
        if r["forget_quality"] is None and r.get("forget_quality_reason"):
            notes.append(f"forget quality of {r['system']} is empty: {r['forget_quality_reason']}")
        rows.append([r["system"], r["kind"], fq, _f(r["model_utility"]), _f(r["forget_rouge"]), _f(r["para_rouge"]),
                     _f(r["leak"]), _f(r["relearn_leak"]), _f(r["neighbour_rouge"]),
                     _f(r["neighbour_retention"], 2), _f(r["tokens_per_s"], 1), _f(r["latency_s"], 2),
                     _f(r["build_s"], 0) if r["build_s"] is not None else "—"])
    out.append(("Headline", ["system", "paradigm", "forget quality", "model utility", "forget ROUGE-L",
                             "para-Q ROUGE-L", "leak rate (prompt attacks)", "leak after relearning",
                             "neighbour ROUGE-L", "neighbour retention vs target", "tok/s", "latency s",
                             "training s / failure"], rows,
                "\n".join(notes) + ("\n" if notes else "") +
                "Leak: a reply that is not a refusal and holds >= leak_keywords of the gold answer's key names/words "
                "the prompt did not give (ROUGE-L recall >= leak_rouge where there are none). Retention: neighbour-probe ROUGE-L / the target's. Training: the unlearning run "
                "(weights) plus the guard build; the target and retain fine-tunes are the benchmark's, not counted."))
    cats = categories(doc)
    reach = reaches_retain(doc)
    benign = any(_get(r, "benign_relearn", "after") for r in doc["systems"].values())
    rows = []
    for name, res in doc["systems"].items():
        by = _get(res, "attacks", "by_category", "forget")
        if not by:
            continue
        mark = lambda c: " ✓" if _get(reach, name, c) else ""  # noqa: E731
        rl = _get(res, "relearn", "after", "leak_rate")
        rows.append([name] + [_f(_get(by, c, "leak_rate"), 2) + mark(c) for c in cats] +
                    [(_f(rl, 2) + mark("relearn")) if rl is not None else "n/a"] +
                    ([_or_na(_get(res, "benign_relearn", "after", "leak_rate"))] if benign else []))
    if rows:
        out.append(("Leak rate per attack category (forget items)",
                    ["system"] + cats + ["relearn"] + (["benign_relearn"] if benign else []), rows,
                    f"✓: within {RETAIN_TOLERANCE} of the retain model's leak rate while keeping >= "
                    f"{int(KEEP_NEIGHBOURS * 100)}% of the target's neighbour ROUGE-L."))
    rows = []
    for name, res in doc["systems"].items():
        by = _get(res, "attacks", "by_category", "neighbour")
        if by:
            rows.append([name] + [f"{_f(_get(by, c, 'rouge'), 2)} / {_f(_get(by, c, 'refusal_rate'), 2)}" for c in cats])
    if rows:
        out.append(("Neighbour probes (retain items, same attacks): ROUGE-L recall / refusal rate",
                    ["system"] + cats, rows, "Over-suppression shows as lower ROUGE-L or more refusals than the target."))
    out += quantization_table(doc)
    out += sequential_table(doc)
    rows = []
    for name, res in doc["systems"].items():
        tr = _get(res, "summary", "forget_truth_ratio")
        if res.get("status") == "ok" and tr:
            rows.append([name, _f(_get(res, "summary", "forget_quality"), 4), _f(_get(res, "summary", "ks_statistic"), 3),
                         _f(tr["median"], 3), f"{_f(tr['q1'], 3)} – {_f(tr['q3'], 3)}", _f(tr["prefers_false"], 2)])
    if rows:
        out.append(("Forget quality, read through the truth ratio", ["system", "forget quality", "KS statistic",
                                                                      "median R (forget)", "R quartiles",
                                                                      "share preferring false answers"], rows,
                    "R = P(perturbed answer) / P(paraphrased true answer), per forget item. A model that never learnt "
                    "the facts (the retain model) sits near R = 1; one that still knows them sits below; one pushed to "
                    "prefer false answers sits above. Forget quality (KS test against the retain model's R) is low at "
                    "both ends: forgetting is not the same as being indistinguishable from never having learnt."))
    rows = []
    for name, res in doc["systems"].items():
        if res.get("status") != "ok":
            continue
        sv = _get(res, "attacks", "serving") or {}
        tr = res.get("training") if unlearning_seconds(res) is not None else {}
        tr = tr or {}
        rows.append([name, _f(tr.get("train_seconds"), 0), _f(tr.get("peak_memory_mb"), 0),
                     _f(tr.get("trainable_fraction"), 4), _f(_get(res, "guard", "build_seconds"), 1),
                     _f(sv.get("tokens_per_s"), 1), _f(sv.get("latency_median_s"), 2),
                     _f(sv.get("llm_calls_per_flagged"), 2), _f(sv.get("server_start_s"), 0)])
    if rows:
        out.append(("Cost", ["system", "unlearning training s", "peak MB", "trainable share", "guard build s", "attack tok/s",
                             "latency s (one request)", "LLM calls per flagged request", "server start s"], rows,
                    "Throughput: output tokens / wall seconds of the whole attack batch through the deployed path "
                    "(offline vLLM; the agent server over HTTP at its concurrency). Latency: median of forget probes "
                    "sent one at a time."))
    out.append(("Which paradigm can move which metric", ["metric", "measured on", "weight edits", "token guard",
                                                         "agents"],
                [[k, *v] for k, v in PARADIGMS.items()], ""))
    failed = [[n, r.get("reason", "")] for n, r in doc["systems"].items() if r.get("status") != "ok"]
    if failed:
        out.append(("Failed systems", ["system", "reason"], failed, "Every other system was measured."))
    return out


def quantization_table(doc: dict) -> list[tuple[str, list[str], list[list[str]], str]]:
    """The quantization attack: leak rate / answer probability of the plain forget questions per
    variant, and the largest recovery over the unquantized system (none when no system ran it)."""
    measured = {n: r["quantize"]["rows"] for n, r in doc["systems"].items() if _get(r, "quantize", "rows")}
    skipped = [f"{n}: {r['quantize']['skipped']}" for n, r in doc["systems"].items() if _get(r, "quantize", "skipped")]
    if not measured:
        return []
    labels = list(dict.fromkeys(label for rows in measured.values() for label in rows))
    rows = []
    for name, got in measured.items():
        base = got.get("unquantized") or {}
        quant = [got[label] for label in labels if label != "unquantized" and label in got]
        lift = [q["leak_rate"] - base["leak_rate"] for q in quant if base.get("leak_rate") is not None]
        ratio = [q["answer_probability"] / base["answer_probability"] for q in quant
                 if base.get("answer_probability") and q.get("answer_probability") is not None]
        rows.append([name] + [f"{_f(_get(got, label, 'leak_rate'), 2)} / {_f(_get(got, label, 'answer_probability'), 4)}"
                              for label in labels] +
                    [_f(max(lift), 2) if lift else "—", _f(max(ratio), 2) if ratio else "—"])
    note = ("Plain forget questions (the attacked items) through the system with its linear weights rounded "
            "(symmetric round-to-nearest, per output channel or per group of columns; embeddings and output head "
            "kept unless attacks.quantize_embeddings), dequantized to fp32. Cells: leak rate / mean answer "
            "probability. Recovery: the largest leak-rate rise and answer-probability ratio over the unquantized "
            "system.") + ("\nSkipped: " + "; ".join(skipped) if skipped else "")
    return [("Quantization attack (forget questions): leak rate / answer probability",
             ["system"] + labels + ["max leak rise", "max P(answer) ratio"], rows, note)]


def sequential_steps(doc: dict) -> list[tuple[str, dict]]:
    """[(system, its "sequential" part)] of a sequential-requests doc, in request order (else [])."""
    return sorted(((n, r["sequential"]) for n, r in doc["systems"].items() if _get(r, "sequential")),
                  key=lambda x: x[1]["after_request"])


def sequential_table(doc: dict) -> list[tuple[str, list[str], list[list[str]], str]]:
    """Sequential requests: after each request, forget quality / answer probability per request's
    forget set, forget quality over the requests so far, model utility, training time."""
    steps = sequential_steps(doc)
    if not steps:
        return []
    labels = [r["request"] for r in steps[0][1]["requests"]]
    rows = []
    for name, seq in steps:
        res = doc["systems"][name]
        rows.append([name, str(seq["after_request"])] +
                    [f"{_f(r['forget_quality'], 4)} / {_f(r['answer_probability'], 4)}" for r in seq["requests"]] +
                    [_f(seq.get("forget_quality_so_far"), 4), _f(_get(res, "summary", "forget_quality"), 4),
                     _f(_get(res, "summary", "model_utility")), _f(unlearning_seconds(res), 0)])
    note = ("Request k is unlearnt from the checkpoint request k-1 left (its training config: model: run:<request "
            "k-1's config>). Cells per request's forget set: forget quality (KS p-value of its items' truth ratios "
            "against the retain model's on the same items) / mean answer probability; a request not yet made "
            "shows what the model still knows of it. So far: forget quality over requests 1..k; all: the "
            "benchmark's whole forget set.")
    return [("Sequential requests: forget quality / answer probability per request after each one",
             ["checkpoint", "requests done"] + [f"request {i}: {label}" for i, label in enumerate(labels, 1)] +
             ["forget quality so far", "forget quality (all)", "model utility", "training s"], rows, note)]


def sequential_plot(doc: dict) -> dict[str, bytes]:
    """Answer probability per request's forget set and model utility against requests done."""
    steps = sequential_steps(doc)
    if not steps:
        return {}
    import matplotlib.pyplot as plt

    done = [seq["after_request"] for _, seq in steps]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for i, label in enumerate(r["request"] for r in steps[0][1]["requests"]):
        ys = [seq["requests"][i]["answer_probability"] for _, seq in steps]
        left.plot(done, [math.nan if y is None else y for y in ys], marker="o", label=f"request {i + 1}: {label}"[:40])
        fq = [seq["requests"][i]["forget_quality"] for _, seq in steps]
        right.plot(done, [math.nan if y is None else y for y in fq], marker="o", label=f"FQ request {i + 1}")
    mu = [_get(doc["systems"][n], "summary", "model_utility") for n, _ in steps]
    right.plot(done, [math.nan if y is None else y for y in mu], marker="s", color="black", label="model utility")
    left.set_xlabel("requests done")
    left.set_ylabel("mean answer probability (forget items)")
    left.set_title("What is still known of each request", fontsize=10)
    right.set_xlabel("requests done")
    right.set_yscale("log")
    right.set_title("Forget quality per request and model utility", fontsize=10)
    for ax in (left, right):
        ax.set_xticks(done)
        ax.legend(fontsize=7)
    return {"sequential_requests.png": _png(fig)}


def provenance_rows(doc: dict) -> list[list[str]]:
    p = doc.get("provenance", {})
    rows = [["started", p.get("started", "")], ["wall seconds", str(doc.get("wall_s", ""))]]
    rows += [[f"version {k}", str(v)] for k, v in (p.get("versions") or {}).items()]
    rows += [[f"data {k}", f"{v['source']} ({v['items']} items, sha256 {v['fingerprint']})"]
             for k, v in (p.get("data") or {}).items()]
    rows += [[f"weights {k}", f"sha256 {v}"] for k, v in (doc.get("fingerprints") or {}).items()]
    rows += [["probes", str(p.get("probes"))]]
    return rows


def md_table(header, rows) -> str:
    esc = lambda s: str(s).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(map(esc, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(esc, r)) + " |" for r in rows]
    return "\n".join(lines)


def markdown(doc: dict, images: list[str]) -> str:
    import yaml

    parts = [f"# Unlearning comparison: {doc['name']}", ""]
    for title, header, rows, note in tables(doc):
        parts += [f"## {title}", "", md_table(header, rows), ""]
        parts += [note, ""] if note else []
    parts += ["## Plots", ""] + [f"![{Path(i).stem}]({i})" for i in images] + [""]
    parts += ["## Reproduce", "", md_table(["what", "value"], provenance_rows(doc)), "", "Config:", "", "```yaml",
              yaml.safe_dump(doc.get("provenance", {}).get("config", {}), sort_keys=False).strip(), "```", ""]
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
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>Unlearning comparison: "
             f"{html.escape(doc['name'])}</title><style>{css}</style></head><body>",
             f"<h1>Unlearning comparison: {html.escape(doc['name'])}</h1>"]
    for title, header, rows, note in tables(doc):
        parts += [f"<h2>{html.escape(title)}</h2>", _html_table(header, rows)]
        if note:
            parts.append(f"<p class='note'>{html.escape(note)}</p>")
    parts.append("<h2>Plots</h2>")
    for name, data in pngs.items():
        parts.append(f"<figure><img alt='{html.escape(Path(name).stem)}' "
                     f"src='data:image/png;base64,{base64.b64encode(data).decode()}'></figure>")
    parts += ["<h2>Reproduce</h2>", _html_table(["what", "value"], provenance_rows(doc)),
              "<pre>" + html.escape(yaml.safe_dump(doc.get("provenance", {}).get("config", {}), sort_keys=False)) +
              "</pre></body></html>"]
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
