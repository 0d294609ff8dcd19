"""Bootstrap intervals over items (evaluation/metrics/bootstrap.py) against a naive loop that recomputes
each resample with the point estimate's own functions (scoring.aggregate, tofu.model_utility, ks_2samp)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from scipy.stats import ks_2samp

from unlearnkit.evaluation.config import EvalConfig
from unlearnkit.evaluation.metrics import bootstrap as B
from unlearnkit.evaluation.metrics import tofu as T
from unlearnkit.evaluation.results import EvalResult, QARecord, TaskResult
from unlearnkit.evaluation.scoring import aggregate
from unlearnkit.evaluation.summary import Reference, summarize


def _items(rng, n, missing_rouge=()):
    return [QARecord("q", "a", probability=float(rng.uniform(0.05, 0.9)), truth_ratio=float(rng.uniform(0.2, 1.6)),
                     **({} if i in missing_rouge else {"rougeL_recall": float(rng.uniform(0, 1))})) for i in range(n)]


def test_forget_quality_interval_is_the_quantiles_of_paired_resampled_ks_p_values():
    rng = np.random.default_rng(3)
    mine, ref = rng.uniform(0.2, 1.5, 12), rng.uniform(0.5, 1.2, 12)
    got = B.forget_quality_interval(mine, ref, resamples=200, seed=7)
    draws, values = np.random.default_rng(7), []
    for _ in range(200):
        idx = draws.integers(0, 12, 12)          # the same items on both sides: paired
        values.append(ks_2samp(mine[idx], ref[idx]).pvalue)
    assert (got.low, got.high) == pytest.approx(tuple(np.quantile(values, [0.025, 0.975])))


def test_forget_quality_interval_resamples_unequal_sides_apart():
    rng = np.random.default_rng(4)
    mine, ref = rng.uniform(0.2, 1.5, 10), rng.uniform(0.5, 1.2, 7)
    got = B.forget_quality_interval(mine, ref, resamples=100, seed=1)
    draws, values = np.random.default_rng(1), []
    for _ in range(100):
        ia = draws.integers(0, 10, 10)
        ib = draws.integers(0, 7, 7)
        values.append(ks_2samp(mine[ia], ref[ib]).pvalue)
    assert (got.low, got.high) == pytest.approx(tuple(np.quantile(values, [0.025, 0.975])))


def test_model_utility_interval_recomputes_the_point_estimate_per_resample():
    rng = np.random.default_rng(5)
    sets = {"retain": _items(rng, 9, missing_rouge={2}), "real_authors": _items(rng, 6), "world_facts": _items(rng, 7)}
    point = T.model_utility({name: aggregate(SimpleNamespace(kind="qa", role="retain"), items, EvalConfig())
                             for name, items in sets.items()})
    got = B.model_utility_interval(sets, list(point["components"]), resamples=150, seed=2)
    draws, values = np.random.default_rng(2), []
    for _ in range(150):
        aggs = {}
        for name in sorted(sets):                 # each set on its own, in name order
            n = len(sets[name])
            picked = [sets[name][i] for i in draws.integers(0, n, n)]
            aggs[name] = aggregate(SimpleNamespace(kind="qa", role="retain"), picked, EvalConfig())
        values.append(T.model_utility(aggs)["model_utility"])
    assert (got.low, got.high) == pytest.approx(tuple(np.quantile(values, [0.025, 0.975])))
    assert got.low < point["model_utility"] < got.high


def test_identical_items_give_an_interval_of_width_zero_and_empty_input_none():
    same = [QARecord("q", "a", probability=0.5, rougeL_recall=0.25, truth_ratio=0.5)] * 5
    got = B.model_utility_interval({"retain": same}, ["retain.probability", "retain.rougeL_recall",
                                                      "retain.truth_ratio"], resamples=20)
    assert got.low == got.high == pytest.approx(T.harmonic_mean([0.5, 0.25, 0.5]))
    assert B.forget_quality_interval([], [1.0]) is None
    assert B.model_utility_interval({}, ["retain.probability"]) is None


def test_summary_carries_both_intervals_and_none_when_asked_for_none():
    rng = np.random.default_rng(6)
    forget = [QARecord("q", "a", truth_ratio=float(x)) for x in rng.uniform(0.2, 1.5, 10)]
    tasks = {"forget": TaskResult("qa", "forget", "test", "f", {}, forget)}
    for name in ("retain", "real_authors", "world_facts"):
        items = _items(rng, 8)
        tasks[name] = TaskResult("qa", "retain", "test", name, aggregate(SimpleNamespace(kind="qa", role="retain"),
                                                                           items, EvalConfig()), items)
    result = EvalResult("tofu", {}, {}, {}, {}, tasks)
    ref = Reference(list(rng.uniform(0.5, 1.2, 10)), None, "retain", "f")
    s = summarize(result, EvalConfig(), ref, resamples=50)
    assert s.forget.interval["low"] <= s.forget.interval["high"]
    assert s.utility.interval["low"] < s.utility.value < s.utility.interval["high"]
    assert s.forget.interval["method"].startswith("percentile bootstrap")
    none = summarize(result, EvalConfig(), ref, resamples=0)
    assert none.forget.interval is None and none.utility.interval is None
    assert none.forget.value == s.forget.value
