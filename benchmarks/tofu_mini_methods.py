"""TOFU-mini benchmark of the weight-level methods (not a test: it prints measured figures).

    python benchmarks/tofu_mini_methods.py [--methods grad_diff,npo,ihl,ihl_fila,undial,rmu,wga,satimp]

Builds (or reuses from the cache) the TOFU-mini target and retain fine-tunes, then runs each
method's config from configs/train/ as its own process (so peak memory is per run), and
prints one table: mean answer probability on the forget set (forget01, 40 QA) and on a fixed
retain sample (every 3rd of the 360 retained QA) before and after, the trainable-parameter
fraction, wall time and peak memory. Results also go to runs/bench/tofu_mini_methods.json.
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
DEFAULT_METHODS = ["grad_diff", "npo", "ihl", "ihl_fila", "undial", "rmu", "wga", "satimp"]


def train_cached(config: Path) -> tuple[Path, float]:
    started = time.time()
    proc = subprocess.run([sys.executable, "-m", "unlearnkit.cli", "train", "--cached", "--config", str(config)],
                          stdout=subprocess.PIPE, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"training {config} failed (exit {proc.returncode})")
    return Path(proc.stdout.strip().splitlines()[-1]), time.time() - started


def probabilities(model_dir: Path, forget, retain) -> tuple[float, float]:
    from unlearnkit.evaluation.probability import answer_probabilities, mean
    from unlearnkit.models.loading import load_model

    model, tok = load_model(str(model_dir))
    return mean(answer_probabilities(model, tok, forget)), mean(answer_probabilities(model, tok, retain))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS))
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench" / "tofu_mini_methods.json"))
    args = parser.parse_args()
    os.environ.setdefault("UNLEARN_TOFU_DIR", str(ROOT.parent / "shared" / "data" / "tofu"))
    from unlearnkit.data.sources import load_spec

    forget = load_spec("tofu/forget01")
    retain = load_spec("tofu/forget10-forget01")[::3]
    results = {}
    for name in ("tofu_mini_target", "tofu_mini_retain"):
        path, wall = train_cached(ROOT / "configs" / "finetune" / f"{name}.yaml")
        run = json.loads((path / "run.json").read_text())
        f, r = probabilities(path, forget, retain)
        results[name] = {"path": str(path), "forget_p": f, "retain_p": r, "run": run}
        print(f"{name}: forget P {f:.4f}  retain P {r:.4f}  train {run['train_seconds']:.0f} s  "
              f"(this call {wall:.0f} s)", flush=True)
    base = results["tofu_mini_target"]
    for method in args.methods.split(","):
        path, wall = train_cached(ROOT / "configs" / "train" / f"{method}.yaml")
        run = json.loads((path / "run.json").read_text())
        f, r = probabilities(path, forget, retain)
        results[method] = {"path": str(path), "forget_p": f, "retain_p": r, "run": run}
        print(f"{method}: forget P {f:.4f}  retain P {r:.4f}  ({run['total_seconds']:.0f} s)", flush=True)

    print(f"\nTOFU-mini (SmolLM2-135M-Instruct; forget = forget01, 40 QA; retain sample = {len(retain)} QA)")
    head = f"{'system':18s} {'trainable':>9s} {'forget P':>9s} {'cut':>7s} {'retain P':>9s} {'change':>8s} {'wall s':>7s} {'peak MB':>8s}"
    print(head)
    print("-" * len(head))
    for name, res in results.items():
        run = res["run"]
        cut = base["forget_p"] / max(res["forget_p"], 1e-12)
        change = 100 * (res["retain_p"] / base["retain_p"] - 1)
        print(f"{name:18s} {100 * run['trainable_fraction']:8.2f}% {res['forget_p']:9.4f} {cut:6.1f}x "
              f"{res['retain_p']:9.4f} {change:+7.1f}% {run['total_seconds']:7.0f} {run['peak_memory_mb']:8.0f}")
    ft = results["tofu_mini_target"]["run"]["train_seconds"] + results["tofu_mini_retain"]["run"]["train_seconds"]
    print(f"\ntarget + retain fine-tunes: {ft / 60:.1f} min of training (cached afterwards)")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
