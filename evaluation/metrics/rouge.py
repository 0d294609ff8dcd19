"""ROUGE as TOFU and MUSE compute it: Google's `rouge_score` with the Porter stemmer.

TOFU reports ROUGE-L *recall* of the greedy answer against the gold answer (`scorer.score(gold,
generated)`); MUSE reports ROUGE-L *F1*."""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def _scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=True)


def rouge_scores(gold: str, generated: str) -> dict[str, float]:
    """{'rouge1_recall', 'rougeL_recall', 'rougeL_f1'} of `generated` against `gold`."""
    s = _scorer().score(gold, generated)
    return {"rouge1_recall": s["rouge1"].recall, "rougeL_recall": s["rougeL"].recall,
            "rougeL_f1": s["rougeL"].fmeasure}


def rouge_l_recall(gold: str, generated: str) -> float:
    return rouge_scores(gold, generated)["rougeL_recall"]


def rouge_l_f1(gold: str, generated: str) -> float:
    return rouge_scores(gold, generated)["rougeL_f1"]
