"""The longest-verbatim-span judge of comparison replies (benchmarks/quote_spans.py)."""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path

import numpy as np

from unlearnkit.guard.quotes import longest_run

_spec = importlib.util.spec_from_file_location(
    "quote_spans", Path(__file__).resolve().parents[1] / "benchmarks" / "quote_spans.py")
qs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(qs)


def test_longest_span_equals_the_dynamic_programme_on_random_replies():
    rng = random.Random(1)
    corpus = [rng.randrange(50) for _ in range(400)]
    spans = qs.CorpusSpans(np.array(corpus, dtype=np.int32), np.array([0]))
    for _ in range(200):
        reply = [rng.randrange(50) for _ in range(rng.randrange(1, 40))]
        if rng.random() < 0.5:           # half of them quote a run of the corpus
            at = rng.randrange(350)
            reply = reply[:5] + corpus[at:at + rng.randrange(1, 40)] + reply[5:]
        assert spans.longest(reply) == longest_run(reply, corpus)


def test_a_span_does_not_run_across_two_pieces_of_the_corpus():
    spans = qs.CorpusSpans(np.array([1, 2, 3, 4, 5, 6], dtype=np.int32), np.array([0, 3]))
    assert spans.longest([1, 2, 3]) == 3 and spans.longest([2, 3, 4, 5]) == 2


def test_replies_are_read_from_attacks_and_evaluation_sets():
    system = {"attacks": {"records": [{"reply": "a"}, {"reply": None}]},
              "metrics": {"tasks": {"verbmem": {"items": [{"generated": "b"}]}}}}
    assert qs.replies(system) == {"prompt attacks": ["a"], "eval: verbmem": ["b"]}
