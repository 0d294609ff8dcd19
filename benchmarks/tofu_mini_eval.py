"""TOFU-mini evaluation table of the fine-tuned target, the retain model and the weight-level methods
(not a test: it prints measured figures).

    python benchmarks/tofu_mini_eval.py [--systems target,retain,grad_diff,npo,ihl,ihl_fila,undial]

Each system is the cached output of its training config (`unlearn train --cached`; built here if
missing) and is evaluated with `unlearn eval --benchmark tofu-mini` in its own process, forget
quality against the retain model's results (evaluated first). Per system: forget quality (KS p-value), model utility,
forget-set ROUGE-L recall and answer probability, and the wall time of its evaluation (cached
evaluations are re-measured with --no-cache unless --reuse). Results go to runs/bench/tofu_mini_eval.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SYSTEMS = {"target": "configs/finetune/tofu_mini_target.yaml", "retain": "configs/finetune/tofu_mini_retain.yaml",
           **{m: f"configs/train/{m}.yaml" for m in ("grad_diff", "npo", "ihl", "ihl_fila", "undial")}}


def run(cmd: list[str]) -> str:
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed (exit {proc.returncode})")
    return proc.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--reuse", action="store_true", help="reuse cached evaluations (times are then the cached ones)")
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench" / "tofu_mini_eval.json"))
    args = parser.parse_args()
    os.environ.setdefault("UNLEARN_TOFU_DIR", str(ROOT.parent / "shared" / "data" / "tofu"))
    names = [s for s in args.systems.split(",") if s]
    unknown = sorted(set(names) - set(SYSTEMS))
    if unknown:
        raise SystemExit(f"unknown system(s) {unknown}; valid: {sorted(SYSTEMS)}")
    names = ["retain"] + [n for n in names if n != "retain"]  # the reference first
    cli = [sys.executable, "-m", "unlearnkit.cli"]
    results = {}
    for name in names:
        run(cli + ["train", "--cached", "--config", SYSTEMS[name]])
        out = ROOT / "runs" / "eval" / f"tofu-mini-{name}.json"
        # every system (the retain model too: trivially FQ 1) against the retain model's cached results
        cmd = cli + ["eval", "--model", f"run:{SYSTEMS[name]}", "--benchmark", "tofu-mini", "--out", str(out),
                     "--retain-eval", f"model:run:{SYSTEMS['retain']}"] + ([] if args.reuse else ["--no-cache"])
        started = time.time()
        run(cmd)
        wall = time.time() - started
        res = json.loads(out.read_text())
        s, f = res["summary"], res["tasks"]["forget"]["aggregate"]
        results[name] = {"forget_quality": s.get("forget_quality"), "ks_statistic": s.get("ks_statistic"),
                         "model_utility": s.get("model_utility"), "forget_rougeL": f.get("rougeL_recall"),
                         "forget_rougeL_paraphrased_q": f.get("rougeL_recall_paraphrased_question"),
                         "forget_probability": f.get("probability"), "forget_truth_ratio": f.get("truth_ratio"),
                         "retain_rougeL": res["tasks"]["retain"]["aggregate"].get("rougeL_recall"),
                         "eval_wall_s": wall, "timing": res.get("timing")}
        r = results[name]
        print(f"{name:8s} FQ {r['forget_quality']:.3g}  MU {r['model_utility']:.4f}  forget ROUGE-L "
              f"{r['forget_rougeL']:.4f}  eval {wall:.0f} s", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    print()
    print(f"{'system':9s} {'forget quality':>14s} {'KS D':>6s} {'model utility':>13s} {'forget ROUGE-L':>14s} "
          f"{'para-Q ROUGE-L':>14s} {'forget P':>8s} {'retain ROUGE-L':>14s} {'eval s':>7s}")
    for name, r in results.items():
        print(f"{name:9s} {r['forget_quality']:14.3g} {r['ks_statistic']:6.3f} {r['model_utility']:13.4f} "
              f"{r['forget_rougeL']:14.4f} {r['forget_rougeL_paraphrased_q']:14.4f} {r['forget_probability']:8.4f} "
              f"{r['retain_rougeL']:14.4f} {r['eval_wall_s']:7.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
