"""The longest verbatim corpus span in a comparison's replies, judged on the text.

    python benchmarks/quote_spans.py --run runs/compare/muse-mini --corpus muse/mini/forget_text \
        [--model run:configs/finetune/muse_mini_target.yaml] [--tau 12]

Every reply a system wrote in a `unlearn compare` run is re-tokenised with the served model's
tokenizer, and its longest run of consecutive tokens that the corpus also holds is found: the prompt
attacks and format shifts, and the evaluation sets' generations (MUSE's verbmem continuations among
them). leak@k's samples are kept in the run cache, not in the results, and are not read. Printed per
system and source: how many replies, the median, 99th percentile and largest span, and how many
exceed τ. The guard's bound is on the token ids it lets
through; this judges what a reader gets, the text.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from unlearnkit.guard.corpus import read_corpus, tokenize
from unlearnkit.models.loading import load_tokenizer
from unlearnkit.training.cache import resolve_model

MAX_SPAN = 256    # spans are measured up to this many tokens (a longer one reads as MAX_SPAN)
M = (1 << 61) - 1   # polynomial hashes of token runs, mod a Mersenne prime
P = 1_000_003
POWERS = [pow(P, n, M) for n in range(MAX_SPAN + 1)]


def prefix_hashes(ids: list[int]) -> list[int]:
    out = [0]
    for t in ids:
        out.append((out[-1] * P + t + 1) % M)
    return out


def run_hash(hashes: list[int], i: int, n: int) -> int:
    """The hash of the n tokens from position i, from their sequence's `prefix_hashes`."""
    return (hashes[i + n] - hashes[i] * POWERS[n]) % M


class CorpusSpans:
    """Hashes of every corpus run of up to MAX_SPAN tokens, within each piece the corpus was tokenised in."""

    def __init__(self, ids: np.ndarray, starts: np.ndarray):
        ends = [*starts[1:], len(ids)]
        self.grams: set[tuple[int, int]] = set()     # (length, hash)
        for start, end in zip(starts, ends):
            hashes = prefix_hashes(ids[start:end].tolist())
            for i in range(end - start):
                self.grams.update((n, run_hash(hashes, i, n)) for n in range(1, min(MAX_SPAN, end - start - i) + 1))

    def longest(self, reply: list[int]) -> int:
        """The longest run of `reply` the corpus holds (a run's prefixes are runs too, so each start
        only has to beat the best so far)."""
        hashes, best = prefix_hashes(reply), 0
        for i in range(len(reply)):
            while best < MAX_SPAN and i + best < len(reply) and (best + 1, run_hash(hashes, i, best + 1)) in self.grams:
                best += 1
        return best


def replies(system: dict) -> dict[str, list[str]]:
    """{source: texts} of one system's full results (systems/<name>.json)."""
    out: dict[str, list[str]] = {"prompt attacks": [r["reply"] for r in system.get("attacks", {}).get("records", [])
                                                    if isinstance(r.get("reply"), str)]}
    for name, task in (system.get("metrics") or {}).get("tasks", {}).items():
        texts = [item.get(k) for item in task.get("items", []) for k in ("generated_text", "generated_paraphrased_question", "generated")]
        out[f"eval: {name}"] = [t for t in texts if isinstance(t, str)]
    return {k: v for k, v in out.items() if v}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, required=True, help="a `unlearn compare` output directory")
    ap.add_argument("--corpus", required=True, help="the corpus spec the guard was built from")
    ap.add_argument("--model", default="run:configs/finetune/muse_mini_target.yaml", help="whose tokenizer")
    ap.add_argument("--tau", type=int, default=12)
    ap.add_argument("--out", type=Path, help="also write the figures here (JSON)")
    args = ap.parse_args()

    tok = load_tokenizer(resolve_model(args.model))
    spans = CorpusSpans(*tokenize(tok, read_corpus(args.corpus)))
    figures: dict = {}
    for path in sorted((args.run / "systems").glob("*.json")):
        if path.name.endswith(".attack.json"):
            continue
        system = json.loads(path.read_text())
        for source, texts in replies(system).items():
            lengths = np.array([spans.longest(tok(t, add_special_tokens=False)["input_ids"]) for t in texts])
            row = {"replies": len(lengths), "median": float(np.median(lengths)), "p99": float(np.percentile(lengths, 99)),
                   "max": int(lengths.max()), "over_tau": int((lengths > args.tau).sum())}
            figures.setdefault(path.stem, {})[source] = row
            print(f"{path.stem:24s} {source:28s} {row['replies']:5d} replies  median {row['median']:5.1f}  "
                  f"p99 {row['p99']:5.1f}  max {row['max']:3d}  over tau={args.tau}: {row['over_tau']}")
    if args.out:
        args.out.write_text(json.dumps({"tau": args.tau, "systems": figures}, indent=1))


if __name__ == "__main__":
    main()
