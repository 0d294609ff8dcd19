"""The verbatim-quote filter at scale: build time and memory of its structure, and its cost per decode step.

    python benchmarks/quote_build.py [--tokens 10000000] [--model smollm2] [--tau 12] [--rows 160]

The corpus: MUSE-News as shipped (raw/forget.txt and the privleak texts, about 1.4M SmolLM2 tokens),
then generated documents of words drawn from MUSE-News's own word frequencies until --tokens is reached
(repeating MUSE would repeat its n-grams, which the exact structure stores once: generated text is the
worst case, every n-gram new). Printed: tokenising time, the exact structure's and the Bloom filters'
build time and bytes, the process's peak memory (ru_maxrss) after each phase, and the filter's cost per
decode step for --rows rows (half of them reciting the corpus, so that every step of theirs finds
continuations to withhold; the rest on text the corpus does not hold), each row fed one token a step.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
import tracemalloc
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from unlearnkit.data.muse import muse_root
from unlearnkit.guard.corpus import Document, tokenize
from unlearnkit.guard.decode import withhold_quotes
from unlearnkit.guard.quotes import BloomQuotes, ExactQuotes, QuoteFilter

WORDS_PER_DOC = 600


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def muse_documents() -> list[Document]:
    root = muse_root()
    docs = [Document("raw/forget.txt", (root / "raw" / "forget.txt").read_text(encoding="utf-8"))]
    for name in ("forget", "holdout", "retain2"):
        texts = json.loads((root / "privleak" / f"{name}.json").read_text(encoding="utf-8"))
        docs += [Document(f"privleak/{name}[{i}]", t if isinstance(t, str) else t["text"]) for i, t in enumerate(texts)]
    return docs


def generated(docs: list[Document], n_words: int, seed: int = 0) -> list[Document]:
    counts = Counter(w for d in docs for w in d.text.split())
    words = np.array(list(counts))
    p = np.array(list(counts.values()), dtype=np.float64)
    rng = np.random.default_rng(seed)
    drawn = rng.choice(len(words), size=n_words, p=p / p.sum())
    return [Document(f"generated[{i}]", " ".join(words[drawn[a:a + WORDS_PER_DOC]]))
            for i, a in enumerate(range(0, n_words, WORDS_PER_DOC))]


def corpus(tokenizer, n_tokens: int) -> tuple[np.ndarray, np.ndarray, dict]:
    began = time.perf_counter()
    docs = muse_documents()
    tokens, starts = tokenize(tokenizer, docs)
    parts, offsets, have = [tokens], [starts], len(tokens)
    while have < n_tokens:
        more = generated(docs, int((n_tokens - have) / 1.3) + WORDS_PER_DOC, seed=len(parts))
        t, s = tokenize(tokenizer, more)
        parts.append(t)
        offsets.append(s + have)
        have += len(t)
    tokens, starts = np.concatenate(parts)[:n_tokens], np.concatenate(offsets)
    starts = starts[starts < len(tokens)]
    return tokens, starts, {"tokens": len(tokens), "documents": len(starts), "muse_tokens": len(parts[0]),
                            "tokenize_s": round(time.perf_counter() - began, 1), "peak_mib": round(peak_mib())}


def timed_build(build) -> tuple[object, dict]:
    """The build's time, and its own peak memory (numpy's allocations, traced) beside the process's."""
    tracemalloc.start()
    began = time.perf_counter()
    index = build()
    seconds = time.perf_counter() - began
    traced = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    stats = index.stats
    return index, {"kind": stats.kind, "build_s": round(seconds, 1), "ngrams": stats.n_ngrams,
                   "mib": round(stats.bytes / 2**20, 1), "fpr": stats.fpr, "build_peak_mib": round(traced / 2**20),
                   "process_peak_mib": round(peak_mib())}


def step_cost(index, tokens: np.ndarray, rows: int, vocab: int, steps: int = 200) -> dict:
    """Median milliseconds a decode step spends feeding each row one token and withholding for all rows."""
    quotes = QuoteFilter(index)
    rng = np.random.default_rng(0)
    reciting = rows // 2
    at = rng.integers(0, len(tokens) - index.tau - steps - 1, rows)
    states = [quotes.state() for _ in range(rows)]
    for n, state in enumerate(states):
        state.feed(tokens[at[n]:at[n] + index.tau] if n < reciting else rng.integers(0, vocab, index.tau))
    logits = torch.zeros(rows, vocab)
    feed_ms, withhold_ms, withheld = [], [], []
    for step in range(steps):
        began = time.perf_counter()
        for n, state in enumerate(states):
            state.feed([int(tokens[at[n] + index.tau + step]) if n < reciting else int(rng.integers(vocab))])
        fed = time.perf_counter()
        withhold_quotes(logits, list(enumerate(states)))
        done = time.perf_counter()
        feed_ms.append((fed - began) * 1e3)
        withhold_ms.append((done - fed) * 1e3)
        withheld.append(int(torch.isneginf(logits).sum()))
        logits.zero_()
    return {"rows": rows, "feed_ms": round(float(np.median(feed_ms)), 3),
            "withhold_ms": round(float(np.median(withhold_ms)), 3),
            "withheld_per_step": float(np.median(withheld))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=10_000_000)
    ap.add_argument("--model", default="smollm2", help="whose tokenizer")
    ap.add_argument("--tau", type=int, default=12)
    ap.add_argument("--rows", type=int, default=160)
    ap.add_argument("--fpr", type=float, default=1e-4)
    ap.add_argument("--out", type=Path, help="also write the figures here (JSON)")
    ap.add_argument("--tokens-cache", type=Path, help="an .npz of the tokenised corpus: read if there, else written")
    args = ap.parse_args()

    from unlearnkit.models.loading import load_tokenizer
    from unlearnkit.training.cache import resolve_model

    tokenizer = load_tokenizer(resolve_model(args.model))
    vocab = len(tokenizer)
    if args.tokens_cache and args.tokens_cache.is_file():
        saved = np.load(args.tokens_cache)
        tokens, starts, figures = saved["tokens"], saved["starts"], json.loads(str(saved["figures"]))
    else:
        tokens, starts, figures = corpus(tokenizer, args.tokens)
        if args.tokens_cache:
            np.savez(args.tokens_cache, tokens=tokens, starts=starts, figures=json.dumps(figures))
    figures["baseline_mib"] = round(peak_mib())
    print("corpus:", figures, flush=True)
    out = {"corpus": figures}
    exact, out["exact"] = timed_build(lambda: ExactQuotes.build(tokens, starts, args.tau))
    print("exact:", out["exact"], flush=True)
    out["exact_step"] = step_cost(exact, tokens, args.rows, vocab)
    print("exact step:", out["exact_step"], flush=True)
    del exact
    bloom, out["bloom"] = timed_build(lambda: BloomQuotes.build(tokens, starts, args.tau, args.fpr, vocab))
    print("bloom:", out["bloom"], flush=True)
    out["bloom_step"] = step_cost(bloom, tokens, args.rows, vocab, steps=50)
    print("bloom step:", out["bloom_step"], flush=True)
    if args.out:
        args.out.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
