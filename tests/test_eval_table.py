"""The printed table shows what the JSON holds, and says why forget quality is missing."""

from unlearnkit.evaluation.results import EvalResult, Summary, TaskResult
from unlearnkit.evaluation.table import results_table


def _result(benchmark: str, aggregates: dict, summary: dict, timing: dict = None, wall_s: float = None) -> EvalResult:
    """An evaluation result with these task aggregates (no items) and this summary (its JSON form)."""
    tasks = {name: TaskResult("qa", "forget", "test", "fp", agg, []) for name, agg in aggregates.items()}
    return EvalResult(benchmark, {}, {"ref": "m"}, {}, timing or {}, tasks, summary=Summary.from_json(summary),
                      wall_s=wall_s)


def test_table_rows_columns_and_summary():
    result = _result("muse", {"privleak_forget": {"n_items": 3, "min_20%": 1.25},
                              "knowmem_forget": {"n_items": 2, "rougeL_f1": 0.5}},
                     {"forget_quality": None, "forget_quality_reason": "no retain-model results",
                      "mia_auc": 0.25, "privleak": None, "privleak_reason": "no retain-model AUC"},
                     {"generation_s": 3.0}, 4.0)
    text = results_table(result)
    assert "Min-20%" in text and "1.2500" in text and "ROUGE-L F1" in text and "0.5000" in text
    assert "forget quality  missing: no retain-model results" in text
    assert "MIA AUC         0.2500" in text and "missing: no retain-model AUC" in text
    assert "generation 3s" in text


def test_table_reads_forget_quality_through_the_truth_ratio():
    from unlearnkit.evaluation.metrics.tofu import truth_ratio_profile

    result = _result("tofu", {"forget": {"n_items": 4, "truth_ratio": 0.1}},
                     {"forget_quality": 1e-6, "ks_statistic": 0.9, "forget_quality_reference": "retain",
                      "forget_truth_ratio": truth_ratio_profile([10.0, 40.0, 60.0, 0.5])})
    text = results_table(result)
    assert "forget R        median 25 (quartiles 7.62-45)" in text
    assert "false answers preferred on 75% of 4 items" in text


def test_table_shows_the_bootstrap_intervals():
    result = _result("tofu", {"forget": {"n_items": 4, "truth_ratio": 0.1}},
                     {"forget_quality": 0.3, "ks_statistic": 0.2, "forget_quality_reference": "retain",
                      "forget_quality_interval": {"low": 0.01, "high": 0.9},
                      "model_utility": 0.25, "model_utility_components": {"a": 1},
                      "model_utility_interval": {"low": 0.125, "high": 0.5}})
    text = results_table(result)
    assert "model utility   0.2500  (1 components; 95% over items 0.1250-0.5000)" in text
    assert "reference retain; 95% over items 0.0100-0.9000)" in text
