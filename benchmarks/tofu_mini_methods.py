"""TOFU-mini benchmark of the weight-level methods (not a test: it prints measured figures).

    python benchmarks/tofu_mini_methods.py [--methods grad_diff,npo,ihl,ihl_fila,undial,rmu,wga,satimp]
                                           [--seeds 0,1,2]

Builds (or reuses from the cache) the TOFU-mini target and retain fine-tunes, then runs each
method's config from configs/train/ as its own process (so peak memory is per run), and
prints one table: mean answer probability on the forget set (forget01, 40 QA) and on a fixed
retain sample (every 3rd of the 360 retained QA) before and after, the trainable-parameter
fraction, wall time and peak memory. With --seeds, every method is trained once per seed
(`optim.seed=<s>`, each its own cached run) and the table gives mean ± sample sd over seeds, with a
second table of every seed's figures. Results also go to runs/bench/tofu_mini_methods.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_METHODS = ["grad_diff", "npo", "ihl", "ihl_fila", "undial", "rmu", "wga", "satimp"]


def train_cached(config: Path, overrides: tuple[str, ...] = ()) -> tuple[Path, float]:
    started = time.time()
    proc = subprocess.run([sys.executable, "-m", "unlearnkit.cli", "train", "--cached", "--config", str(config),
                           *overrides], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"training {config} failed (exit {proc.returncode})")
    return Path(proc.stdout.strip().splitlines()[-1]), time.time() - started


def probabilities(model_dir: Path, forget, retain) -> tuple[float, float]:
    from unlearnkit.evaluation.probability import answer_probabilities, mean
    from unlearnkit.models.loading import load_model

    model, tok = load_model(str(model_dir))
    return mean(answer_probabilities(model, tok, forget)), mean(answer_probabilities(model, tok, retain))


def measure(config: Path, forget, retain, seed=None) -> dict:
    path, _ = train_cached(config, () if seed is None else (f"optim.seed={seed}",))
    run = json.loads((path / "run.json").read_text())
    f, r = probabilities(path, forget, retain)
    return {"path": str(path), "seed": seed, "forget_p": f, "retain_p": r, "run": run}


def mean_sd(values: list[float], fmt: str) -> str:
    if len(values) == 1:
        return format(values[0], fmt)
    return f"{format(statistics.fmean(values), fmt)} ± {format(statistics.stdev(values), fmt)}"


def print_table(results: dict, base: dict, n_retain: int) -> None:
    print(f"\nTOFU-mini (SmolLM2-135M-Instruct; forget = forget01, 40 QA; retain sample = {n_retain} QA)")
    head = (f"{'system':18s} {'seeds':>6s} {'trainable':>9s} {'forget P':>17s} {'cut':>7s} {'retain P':>17s} "
            f"{'change':>8s} {'wall s':>9s} {'peak MB':>8s}")
    print(head)
    print("-" * len(head))
    for name, runs in results.items():
        f, r = [x["forget_p"] for x in runs], [x["retain_p"] for x in runs]
        cut = base["forget_p"] / max(statistics.fmean(f), 1e-12)
        change = 100 * (statistics.fmean(r) / base["retain_p"] - 1)
        first = runs[0]["run"]
        print(f"{name:18s} {len(runs):6d} {100 * first['trainable_fraction']:8.2f}% {mean_sd(f, '.4f'):>17s} "
              f"{cut:6.1f}x {mean_sd(r, '.4f'):>17s} {change:+7.1f}% "
              f"{mean_sd([x['run']['total_seconds'] for x in runs], '.0f'):>9s} "
              f"{max(x['run']['peak_memory_mb'] for x in runs):8.0f}")
    if any(len(runs) > 1 for runs in results.values()):
        print("\nper seed:")
        for name, runs in results.items():
            for x in runs:
                print(f"  {name:18s} {seed_label(x['seed'])}: forget P {x['forget_p']:.4f}  retain P {x['retain_p']:.4f}  "
                      f"{x['run']['total_seconds']:.0f} s")


def seed_label(seed) -> str:
    return "its config's seed" if seed is None else f"seed {seed}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS))
    parser.add_argument("--seeds", default=None, help="comma-separated optim.seed values (default: each config's own)")
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench" / "tofu_mini_methods.json"))
    args = parser.parse_args()
    os.environ.setdefault("UNLEARN_TOFU_DIR", str(ROOT.parent / "shared" / "data" / "tofu"))
    from unlearnkit.data.sources import load_spec

    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else [None]
    forget = load_spec("tofu/forget01")
    retain = load_spec("tofu/forget10-forget01")[::3]
    results = {}
    for name in ("tofu_mini_target", "tofu_mini_retain"):
        res = measure(ROOT / "configs" / "finetune" / f"{name}.yaml", forget, retain)
        results[name] = [res]
        print(f"{name}: forget P {res['forget_p']:.4f}  retain P {res['retain_p']:.4f}  "
              f"train {res['run']['train_seconds']:.0f} s", flush=True)
    for method in args.methods.split(","):
        results[method] = []
        for seed in seeds:
            res = measure(ROOT / "configs" / "train" / f"{method}.yaml", forget, retain, seed)
            results[method].append(res)
            print(f"{method} ({seed_label(seed)}): forget P {res['forget_p']:.4f}  retain P {res['retain_p']:.4f}  "
                  f"({res['run']['total_seconds']:.0f} s)", flush=True)
    print_table(results, results["tofu_mini_target"][0], len(retain))
    ft = sum(results[n][0]["run"]["train_seconds"] for n in ("tofu_mini_target", "tofu_mini_retain"))
    print(f"\ntarget + retain fine-tunes: {ft / 60:.1f} min of training (cached afterwards)")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
