"""Each metric on cases small enough to compute by hand."""

from __future__ import annotations

import math

import pytest

from unlearnkit.evaluation.metrics import memorization as MEM
from unlearnkit.evaluation.metrics import tofu as T
from unlearnkit.evaluation.metrics.rouge import rouge_scores


def test_rouge_l_recall_precision_f1():
    s = rouge_scores("the cat sat on the mat", "The cat on mat")
    # LCS = "the cat on mat" = 4 tokens; gold has 6, generation 4
    assert s["rougeL_recall"] == pytest.approx(4 / 6)
    assert s["rougeL_f1"] == pytest.approx(2 * (4 / 6) * 1 / (4 / 6 + 1))
    assert s["rouge1_recall"] == pytest.approx(4 / 6)


def test_rouge_uses_the_stemmer_and_order():
    assert rouge_scores("writes novels", "wrote novel")["rouge1_recall"] == pytest.approx(0.5)  # novel(s) stems
    assert rouge_scores("a b c", "c b a")["rougeL_recall"] == pytest.approx(1 / 3)            # order matters


def test_truth_ratio_and_its_scores():
    assert T.truth_ratio(1.0, [2.0, 3.0]) == pytest.approx(math.exp(-1.5))
    assert T.forget_truth_ratio_score([0.5, 2.0, 1.0]) == pytest.approx((0.5 + 0.5 + 1) / 3)
    assert T.retain_truth_ratio_score([0.5, 2.0]) == pytest.approx(0.25)


def test_probabilities():
    assert T.answer_probability(math.log(4)) == pytest.approx(0.25)
    assert T.option_probability(1.0, [1.0, 1.0]) == pytest.approx(1 / 3)
    assert T.option_probability(0.0, [math.log(3)]) == pytest.approx(0.75)


def test_harmonic_mean():
    assert T.harmonic_mean([1, 0.5, 0.25]) == pytest.approx(3 / 7)
    assert T.harmonic_mean([0.9, 0.0]) == 0.0
    assert math.isnan(T.harmonic_mean([]))


def test_model_utility_names_its_components():
    aggs = {"retain": {"probability": 1.0, "rougeL_recall": 0.5, "truth_ratio": 0.25}, "forget": {"probability": 0.1}}
    mu = T.model_utility(aggs)
    assert mu["model_utility"] == pytest.approx(3 / 7)
    assert sorted(mu["components"]) == ["retain.probability", "retain.rougeL_recall", "retain.truth_ratio"]


def test_ks_forget_quality_exact_p_value():
    # fully separated samples of 3 and 3: D = 1, two-sided exact p = 2 / C(6, 3) = 0.1
    fq = T.forget_quality([1, 2, 3], [4, 5, 6])
    assert fq["ks_statistic"] == 1.0
    assert fq["forget_quality"] == pytest.approx(0.1)
    same = T.forget_quality([1, 2, 3], [1, 2, 3])
    assert same["ks_statistic"] == 0.0 and same["forget_quality"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="both"):
        T.forget_quality([], [1.0])


def test_truth_ratio_profile_tells_the_two_low_forget_quality_ends_apart():
    knows = T.truth_ratio_profile([0.1, 0.2, 0.3, 0.4, 0.5])
    pushed = T.truth_ratio_profile([5.0, 50.0, 500.0, 0.5, 20.0])
    assert knows["median"] == pytest.approx(0.3) and knows["prefers_false"] == 0.0
    assert pushed["median"] == pytest.approx(20.0) and pushed["prefers_false"] == pytest.approx(0.8)
    assert (knows["q1"], knows["q3"], knows["n"]) == (pytest.approx(0.2), pytest.approx(0.4), 5)
    with pytest.raises(ValueError, match="at least one"):
        T.truth_ratio_profile([])


def test_min_k_and_mia_auc_and_privleak():
    assert MEM.min_k_score([-1, -2, -3, -4, -5], 0.4) == pytest.approx(4.5)   # 2 lowest of 5
    assert MEM.min_k_score([-1, -3], 0.1) == pytest.approx(3.0)                # at least one token
    with pytest.raises(ValueError):
        MEM.min_k_score([-1.0], 0.0)
    assert MEM.mia_auc([1, 2], [3, 4]) == 0.0        # forget scored as members (lower loss)
    assert MEM.mia_auc([3, 4], [1, 2]) == 1.0
    assert MEM.mia_auc([1, 3], [2, 4]) == pytest.approx(0.25)
    assert MEM.privleak(0.25, 0.5) == pytest.approx(-50.0)


def test_exact_memorization_and_extraction_strength():
    assert MEM.exact_memorization([True, False, True, True]) == 0.75
    assert MEM.extraction_strength([False, True, True]) == pytest.approx(2 / 3)
    assert MEM.extraction_strength([True, True, True]) == 1.0
    assert MEM.extraction_strength([True, True, False]) == 0.0
    assert math.isnan(MEM.extraction_strength([]))
