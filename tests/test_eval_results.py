"""The typed evaluation results (evaluation/results.py): JSON written by the untyped code before them
reads back into the types and is written out unchanged, field for field and in order; what is not a
result is refused naming the problem."""

import json
from pathlib import Path

import pytest

from unlearnkit.errors import DataError
from unlearnkit.evaluation.results import (EvalResult, ForgetQuality, MuseRecord, PrivLeak, QARecord, Summary,
                                           TaskResult, TextRecord, Utility, record_from_json)
from unlearnkit.evaluation.summary import reference_from_result

# two cached evaluations written before the types existed (a guarded TOFU-mini one and a MUSE-mini one),
# two items kept per task, local paths blanked
CACHED = json.loads((Path(__file__).parent / "data" / "eval" / "cached_results.json").read_text())


@pytest.mark.parametrize("name", sorted(CACHED))
def test_results_written_before_the_types_read_back_and_write_out_unchanged(name):
    raw = CACHED[name]
    result = EvalResult.from_json(raw)
    assert json.dumps(result.to_json()) == json.dumps(raw)     # the same text: values, fields and order


def test_records_take_the_type_of_their_task_kind():
    result = EvalResult.from_json(CACHED["muse-mini"])
    kinds = {name: (t.kind, type(t.items[0])) for name, t in result.tasks.items()}
    assert kinds["forget"] == ("qa", QARecord) and kinds["verbmem"] == ("verbmem", MuseRecord)
    assert kinds["knowmem_forget"] == ("knowmem", MuseRecord) and kinds["privleak_forget"] == ("text", TextRecord)
    forget = result.tasks["forget"].items[0]
    assert forget.generated == forget.generated_text[1] and forget.probability is not None


def test_the_guard_notes_and_the_retain_reference_come_from_the_types():
    guarded = EvalResult.from_json(CACHED["tofu-mini+guard"])
    assert set(guarded.guard.flagged_rate) >= {"forget/generated", "retain/generated"}
    ref = reference_from_result(guarded, "retain")
    want = [it["truth_ratio"] for it in CACHED["tofu-mini+guard"]["tasks"]["forget"]["items"]]
    assert ref.truth_ratios == want and ref.forget_fingerprint == CACHED["tofu-mini+guard"]["tasks"]["forget"]["fingerprint"]


def test_a_field_not_measured_is_left_out_not_written_as_null():
    task = TaskResult("qa", "forget", "s", "f", {"n_items": 1}, [QARecord("q", "a", probability=0.5)])
    assert task.to_json()["items"] == [{"question": "q", "answer": "a", "probability": 0.5}]
    assert TaskResult.from_json(task.to_json()) == task


@pytest.mark.parametrize("summary, want", [
    (Summary(Utility(None, {}, reason="no sets")), {"model_utility": None, "model_utility_components": {},
                                                    "model_utility_reason": "no sets"}),
    (Summary(Utility(0.5, {"retain.probability": 0.5})),
     {"model_utility": 0.5, "model_utility_components": {"retain.probability": 0.5}, "model_utility_interval": None}),
    (Summary(forget=ForgetQuality(None, reason="no retain", truth_ratio={"median": 1.0})),
     {"forget_truth_ratio": {"median": 1.0}, "forget_quality": None, "forget_quality_reason": "no retain"}),
    (Summary(forget=ForgetQuality(0.25, 0.5, {"low": 0.1}, "retain")),
     {"forget_quality": 0.25, "ks_statistic": 0.5, "forget_quality_interval": {"low": 0.1},
      "forget_quality_reference": "retain"}),
    (Summary(privleak=PrivLeak(0.75, None, "no retain AUC")),
     {"mia_auc": 0.75, "privleak": None, "privleak_reason": "no retain AUC"}),
])
def test_summary_json_keeps_the_flat_keys_and_reads_back(summary, want):
    assert summary.to_json() == want
    assert Summary.from_json(want) == summary


def test_without_reference_keeps_the_truth_ratio_profile():
    s = Summary(Utility(0.5, {}), ForgetQuality(0.25, 0.5, reference="retain", truth_ratio={"median": 2.0}))
    got = s.without_reference("no retain model in this comparison")
    assert got.forget == ForgetQuality(None, reason="no retain model in this comparison", truth_ratio={"median": 2.0})
    assert got.utility == s.utility


def test_what_is_not_a_result_is_refused_naming_the_problem():
    with pytest.raises(DataError, match=r"unknown field\(s\) \['colour'\]"):
        record_from_json("qa", {"question": "q", "answer": "a", "colour": "red"})
    with pytest.raises(DataError, match=r"unknown task kind 'poem'"):
        record_from_json("poem", {})
    with pytest.raises(DataError, match=r"missing field\(s\) \['n_tokens'\]"):
        record_from_json("text", {"min_k": 0.5})
    with pytest.raises(DataError, match="task 'forget': expected a JSON object, got list"):
        EvalResult.from_json({"tasks": {"forget": []}})
    with pytest.raises(DataError, match="'tasks' is not an object"):
        EvalResult.from_json({"tasks": [1]})
