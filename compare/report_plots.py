"""The report's plots, one function per plot: the typed systems in, {file name: PNG bytes} out (empty when the
plot has no data). compare/report.py lists them (PLOTS); matplotlib is imported inside each.
"""

from __future__ import annotations

import io
import math

from .report_rows import HeadlineRow, Systems, _chain, categories, dial_points, headline_rows


def measured_rows(systems: Systems) -> list[HeadlineRow]:
    """The headline rows of the measured systems (the plots' points)."""
    return [r for r in headline_rows(systems) if r.ok]


def png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def quality_plot(systems: Systems) -> dict[str, bytes]:
    import matplotlib.pyplot as plt

    rows = measured_rows(systems)
    pts = [r for r in rows if r.forget_quality is not None and r.model_utility is not None]
    if not pts:
        return {}
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for r in pts:
        ax.scatter(r.model_utility, r.forget_quality, s=40)
        ax.annotate(r.system, (r.model_utility, r.forget_quality), fontsize=7, xytext=(4, 3), textcoords="offset points")
    ax.set_yscale("log")
    ax.set_xlabel("model utility (higher is better)")
    ax.set_ylabel("forget quality (KS p-value vs retain model; higher is better)")
    ax.axhline(0.05, color="grey", lw=0.8, ls="--")
    ax.set_title("Forget quality vs model utility")
    return {"forget_quality_vs_utility.png": png(fig)}


def leak_plot(systems: Systems) -> dict[str, bytes]:
    import matplotlib.pyplot as plt
    import numpy as np

    rows = measured_rows(systems)
    cats = categories(systems)
    names = [r.system for r in rows if systems[r.system].attacks.forget]
    if not (cats and names):
        return {}
    cols = cats + ["relearn"]
    grid = np.full((len(names), len(cols)), np.nan)
    for i, n in enumerate(names):
        for j, c in enumerate(cats):
            v = systems[n].attacks.forget_rates(c).leak_rate
            grid[i, j] = np.nan if v is None else v
        v = systems[n].relearn.after_leak_rate
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
    return {"leak_rate_by_attack.png": png(fig)}


def cost_plot(systems: Systems) -> dict[str, bytes]:
    import matplotlib.pyplot as plt

    rows = measured_rows(systems)
    cost = [r for r in rows if r.tokens_per_s is not None or r.train_s is not None]
    if not cost:
        return {}
    fig, axes = plt.subplots(1, 3, figsize=(12, 0.8 + 0.38 * len(cost)), sharey=True)
    labels = [r.system for r in cost]
    for ax, key, title in ((axes[0], "build_s", "unlearning training (s)"),
                           (axes[1], "tokens_per_s", "attack batch throughput (tok/s)"),
                           (axes[2], "latency_s", "latency, one request (s)")):
        vals = [getattr(r, key) or 0 for r in cost]
        ax.barh(labels, vals, color="#4c72b0")
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=8)
    axes[0].invert_yaxis()
    fig.suptitle("Cost per system (training = unlearning run + guard build)", fontsize=10)
    return {"cost_per_system.png": png(fig)}


def sequential_plot(systems: Systems) -> dict[str, bytes]:
    """Answer probability per request's forget set and model utility against requests done."""
    steps = _chain(systems, "weight")
    if len(steps) < 2:
        return {}
    import matplotlib.pyplot as plt

    done = [seq.after_request for _, seq in steps]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for i, label in enumerate(r.request for r in steps[0][1].requests):
        ys = [seq.requests[i].answer_probability for _, seq in steps]
        left.plot(done, [math.nan if y is None else y for y in ys], marker="o", label=f"request {i + 1}: {label}"[:40])
        fq = [seq.requests[i].forget_quality for _, seq in steps]
        right.plot(done, [math.nan if y is None else y for y in fq], marker="o", label=f"FQ request {i + 1}")
    mu = [systems[n].metrics.model_utility for n, _ in steps]
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
    return {"sequential_requests.png": png(fig)}


def dial_plot(systems: Systems) -> dict[str, bytes]:
    """Forget quality, leak rate and model utility against the soft mask, per base (strict at the right)."""
    import matplotlib.pyplot as plt

    points = dial_points(systems)
    if len({r.guard_soft_mask for _, r in points}) < 2:
        return {}
    top = max((r.guard_soft_mask or 0.0) for _, r in points) * 1.25 + 1.0   # where strict is drawn
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    for base in sorted({r.base or "" for _, r in points}):
        mine = [r for _, r in points if (r.base or "") == base]
        xs = [top if r.guard_soft_mask is None else r.guard_soft_mask for r in mine]
        series = ([r.metrics.forget_quality for r in mine], [r.attacks.forget_all.leak_rate for r in mine],
                  [r.metrics.model_utility for r in mine])
        for ax, values in zip(axes, series):
            ax.plot(xs, [float("nan") if v is None else v for v in values], "o-", label=base)
    for ax, label in zip(axes, ("forget quality (KS p)", "leak rate (prompt attacks)", "model utility")):
        ax.set_xlabel(f"soft mask (logits); strict drawn at {top:.0f}")
        ax.set_ylabel(label)
    axes[0].set_yscale("log")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return {"guard_dial.png": png(fig)}
