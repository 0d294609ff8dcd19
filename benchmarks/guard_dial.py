"""The calibration dial of the guard (not a test: it prints measured figures).

    python benchmarks/guard_dial.py --policy runs/guard/forget01 [--strengths 0,1,2,4,6,8,12,16] \
        [--model run:configs/finetune/tofu_mini_target.yaml] [--retain run:configs/finetune/tofu_mini_retain.yaml]

For a guard policy (strict or calibrated) over the TOFU-mini forget set: the model's truth ratios
through the guard with matched tokens withheld (strict) and lowered by each soft-mask strength s,
from one teacher-forced statistics pass (guard/calibrate.py: what decoding and `unlearn eval`
see at that s, checked against a real guarded pass at the strengths named in --check), then per
strength: TOFU forget quality (KS p-value against the retain model's truth ratios on the same
items), the truth-ratio profile (median, share of items preferring the false answer), on all
forget items and on the half a calibrated build would not fit on. Leak rate and model utility at a
strength are measured by `unlearn compare` / `unlearn attack` with a guard variant
`[mode=calibrated, soft_mask=s]` (configs/compare/tofu-mini.yaml). Writes runs/bench/guard_dial.json
and guard_dial.png.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def profile(ratios, retain) -> dict:
    from unlearnkit.evaluation.metrics import tofu as TOFU

    fq = TOFU.forget_quality(ratios, retain)
    return {**fq, **TOFU.truth_ratio_profile(ratios)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", required=True, help="guard policy directory (unlearn guard build)")
    parser.add_argument("--model", default="run:configs/finetune/tofu_mini_target.yaml")
    parser.add_argument("--retain", default="run:configs/finetune/tofu_mini_retain.yaml")
    parser.add_argument("--forget", default="tofu/forget01_perturbed")
    parser.add_argument("--strengths", default="0,1,2,4,6,8,10,12,16")
    parser.add_argument("--check", default="8", help="strengths also measured by a real guarded pass")
    parser.add_argument("--penalty", action="store_true", help="keep the policy's semantic penalty under the mask")
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench" / "guard_dial.json"))
    args = parser.parse_args()

    from unlearnkit.data.sources import load_spec
    from unlearnkit.evaluation.calibration import RatioProbe
    from unlearnkit.guard.calibrate import calibration_split
    from unlearnkit.guard.policy import load_policy
    from unlearnkit.guard.runtime import GuardRuntime
    from unlearnkit.models.loading import load_model
    from unlearnkit.training.cache import resolve_model

    forget = load_spec(args.forget)
    _, held_out = calibration_split(forget, 0.5)
    retain_path = resolve_model(args.retain)
    retain_model, retain_tok = load_model(retain_path)
    policy_retain = load_policy(args.policy)   # the retain model is scored unguarded: no tokenizer check needed
    retain = RatioProbe(retain_model, retain_tok, GuardRuntime(policy_retain, retain_tok), forget).ratios(None, guarded=False)
    del retain_model
    path = resolve_model(args.model)
    model, tok = load_model(path)
    probe = RatioProbe(model, tok, GuardRuntime(load_policy(args.policy, tok), tok), forget)
    rows = {"retain model": retain, "unguarded": probe.ratios(None, guarded=False), "strict": probe.ratios(None)}
    for s in [float(x) for x in args.strengths.split(",")]:
        rows[f"s={s:g}"] = probe.ratios_at(s, args.penalty)
    checks = {}
    for s in [float(x) for x in args.check.split(",") if x]:
        real = probe.ratios(s, penalty=args.penalty)
        checks[f"s={s:g}"] = float(np.max(np.abs(np.log(real) - np.log(probe.ratios_at(s, args.penalty)))))
    out = {"policy": args.policy, "model": args.model, "n_items": len(forget), "held_out": held_out,
           "semantic_penalty": args.penalty,
           "max_abs_log_ratio_error_vs_real_pass": checks, "rows": {}}
    print(f"{'system':<14} {'FQ (all 40)':>11} {'KS D':>6} {'median R':>9} {'prefers false':>13} {'FQ (held-out)':>13}")
    for name, ratios in rows.items():
        whole = profile(ratios, retain)
        held = profile([ratios[i] for i in held_out], [retain[i] for i in held_out])
        out["rows"][name] = {"all": whole, "held_out": held, "ratios": ratios}
        print(f"{name:<14} {whole['forget_quality']:>11.3g} {whole['ks_statistic']:>6.3f} {whole['median']:>9.3f} "
              f"{whole['prefers_false']:>13.2f} {held['forget_quality']:>13.3g}")
    print(f"statistics vs real guarded pass (max |log R| difference): {checks}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    plot(out, Path(args.out).with_suffix(".png"))
    return 0


def plot(out: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dial = [(float(k[2:]), v["all"]) for k, v in out["rows"].items() if k.startswith("s=")]
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.8))
    ax[0].plot([s for s, _ in dial], [max(v["forget_quality"], 1e-20) for _, v in dial], "o-")
    ax[0].axhline(out["rows"]["strict"]["all"]["forget_quality"] or 1e-20, color="r", ls="--", label="strict")
    ax[0].axhline(out["rows"]["unguarded"]["all"]["forget_quality"], color="k", ls=":", label="unguarded")
    ax[0].set(yscale="log", xlabel="soft mask (logits)", ylabel="forget quality (KS p)")
    ax[0].legend()
    ax[1].plot([s for s, _ in dial], [v["median"] for _, v in dial], "o-", label="median truth ratio")
    ax[1].axhline(out["rows"]["retain model"]["all"]["median"], color="g", ls="--", label="retain model")
    ax[1].set(xlabel="soft mask (logits)", ylabel="median P(false)/P(true)")
    ax[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
