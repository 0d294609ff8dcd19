"""open-unlearning's TOFU_EVAL.json / TOFU_SUMMARY.json from a result built here through the project's
own scoring and summary code; the exported numbers recomputed with open-unlearning's formulas."""

import dataclasses
import json
import math
import random

import numpy as np
import pytest

from unlearnkit.data.records import QA
from unlearnkit.errors import DataError
from unlearnkit.evaluation.benchmarks import Task
from unlearnkit.evaluation.config import EvalConfig
from unlearnkit.evaluation.export import export_open_unlearning, open_unlearning_logs
from unlearnkit.evaluation.results import EvalResult, PrivLeak, TaskResult
from unlearnkit.evaluation.scoring import task_results
from unlearnkit.evaluation.summary import reference_from_result, summarize
from unlearnkit.evaluation.teacher_forcing import Scored


def _scored(rng, n_tokens):
    return Scored([math.log(rng.uniform(0.05, 0.95)) for _ in range(n_tokens)], [rng.random() < 0.5 for _ in range(n_tokens)])


def build_result(seed: int, n: int = 6) -> tuple[EvalResult, EvalConfig]:
    """Tasks as TOFU-mini has them (forget/retain QA with paraphrased and perturbed answers, real
    authors/world facts with options), engine outputs drawn at random, through task_results and summarize."""
    rng = random.Random(seed)
    cfg = EvalConfig(benchmark="tofu-mini")
    tasks, gen_out, scored_out = [], {}, {}
    for t, (name, kind, role) in enumerate([("forget", "qa", "forget"), ("retain", "qa", "retain"),
                                            ("real_authors", "options", "utility"), ("world_facts", "options", "utility")]):
        items = [QA(f"{name} question {i}?", f"{name} answer number {i}",
                    {"paraphrased_answer": f"answer {i} of {name}", "paraphrased_question": f"{name} q {i}?",
                     "perturbed_answer": [f"wrong {k} {i}" for k in range(3)]}) for i in range(n)]
        tasks.append(Task(name, kind, items, f"test:{name}", role))
        for i, r in enumerate(items):
            gen_out[(t, i)] = {"generated": f"{name} answer {rng.choice(['number', 'was'])} {i}"}
            keys = ["gt"] + (["paraphrased"] if kind == "qa" else []) + [f"perturbed{k}" for k in range(3)]
            scored_out[(t, i)] = {k: _scored(rng, rng.randint(2, 6)) for k in keys}
    return EvalResult("tofu-mini", {}, {}, {}, {}, task_results(tasks, gen_out, scored_out, cfg)), cfg


@pytest.fixture(scope="module")
def results():
    retain, cfg = build_result(seed=1)
    unlearned, _ = build_result(seed=2)
    unlearned = dataclasses.replace(unlearned, summary=summarize(unlearned, cfg, reference_from_result(retain, "retain")))
    retain = dataclasses.replace(retain, summary=summarize(retain, cfg, None))
    return unlearned, retain


def test_files_and_layout(results, tmp_path):
    unlearned, _ = results
    eval_path, summary_path = export_open_unlearning(unlearned, tmp_path / "ou")
    assert (eval_path.name, summary_path.name) == ("TOFU_EVAL.json", "TOFU_SUMMARY.json")
    logs, summary = json.loads(eval_path.read_text()), json.loads(summary_path.read_text())
    assert list(logs) == sorted(logs) and list(summary) == sorted(summary)
    for prefix in ("forget", "retain"):
        for suffix in ("Q_A_Prob", "Q_A_PARA_Prob", "Q_A_PERT_Prob", "Q_A_ROUGE", "Truth_Ratio"):
            assert f"{prefix}_{suffix}" in logs
    for prefix in ("ra", "wf"):
        for suffix in ("Q_A_Prob", "Q_A_Prob_normalised", "Q_A_PERT_Prob", "Q_A_ROUGE", "Truth_Ratio"):
            assert f"{prefix}_{suffix}" in logs
    assert set(summary) == {"extraction_strength", "forget_Q_A_Prob", "forget_Q_A_ROUGE", "forget_Truth_Ratio",
                            "forget_quality", "model_utility"}  # privleak: not measured here, so left out
    for name, metric in logs.items():
        assert "agg_value" in metric, name
        if "value_by_index" in metric:
            assert list(metric["value_by_index"]) == [str(i) for i in range(6)], name
    item = logs["forget_Q_A_ROUGE"]["value_by_index"]["0"]
    assert set(item) == {"rouge1_recall", "rougeL_f1", "rougeL_recall", "input", "ground_truth", "generation"}
    assert item["ground_truth"] == "forget answer number 0" and item["input"] == "forget question 0?"
    assert len(logs["forget_Q_A_PERT_Prob"]["value_by_index"]["0"]["prob"]) == 3


def test_numbers_follow_open_unlearnings_formulas(results):
    """Each aggregate recomputed from the exported per-item values the way open-unlearning's handlers
    do (probability, truth_ratio, hm_aggregate, ks_test) equals the project's own figure."""
    from scipy.stats import hmean, ks_2samp

    unlearned, retain = results
    logs, ref_logs = open_unlearning_logs(unlearned), open_unlearning_logs(retain)
    by_index = lambda name, key, src=logs: [v[key] for v in src[name]["value_by_index"].values()]  # noqa: E731

    assert logs["forget_Q_A_Prob"]["agg_value"] == pytest.approx(unlearned.tasks["forget"].aggregate["probability"])
    assert logs["forget_Q_A_ROUGE"]["agg_value"] == pytest.approx(unlearned.tasks["forget"].aggregate["rougeL_recall"])
    # truth_ratio handler: wrong = exp(-mean perturbed avg_loss), correct = exp(-paraphrased (ra/wf: true) avg_loss)
    for prefix, correct_name, aggregator in [("forget", "forget_Q_A_PARA_Prob", "closer"),
                                             ("retain", "retain_Q_A_PARA_Prob", "true"),
                                             ("ra", "ra_Q_A_Prob", "true"), ("wf", "wf_Q_A_Prob", "true")]:
        correct = np.exp(-np.array(by_index(correct_name, "avg_loss")))
        wrong = np.exp(-np.array([np.mean(x) for x in by_index(f"{prefix}_Q_A_PERT_Prob", "avg_loss")]))
        tr = wrong / correct
        np.testing.assert_allclose(by_index(f"{prefix}_Truth_Ratio", "score"), tr, rtol=1e-9)
        agg = np.mean(np.minimum(tr, 1 / tr)) if aggregator == "closer" else np.mean(np.maximum(0, 1 - tr))
        assert logs[f"{prefix}_Truth_Ratio"]["agg_value"] == pytest.approx(agg)
    # probability_w_options: correct / (correct + sum wrong)
    correct = np.array(by_index("ra_Q_A_Prob", "prob"))
    wrong = np.array([sum(x) for x in by_index("ra_Q_A_PERT_Prob", "prob")])
    np.testing.assert_allclose(by_index("ra_Q_A_Prob_normalised", "prob"), correct / (correct + wrong), rtol=1e-9)
    # hm_aggregate over model_utility's nine pre_compute metrics
    components = [logs[f"{p}_{m}"]["agg_value"] for p in ("retain", "ra", "wf")
                  for m in ("Q_A_Prob" if p == "retain" else "Q_A_Prob_normalised", "Q_A_ROUGE", "Truth_Ratio")]
    assert logs["model_utility"]["agg_value"] == pytest.approx(hmean(components))
    # ks_test: forget_truth_ratio here against the retain model's (what its reference_logs read)
    fq = ks_2samp(by_index("forget_truth_ratio", "score"), by_index("forget_truth_ratio", "score", ref_logs)).pvalue
    assert logs["forget_quality"]["agg_value"] == pytest.approx(fq) == unlearned.summary.forget.value
    assert "forget_quality" not in open_unlearning_logs(retain)   # no reference: no value, as open-unlearning


def test_privleak_follows_open_unlearnings_auc_convention(results):
    unlearned, _ = results
    res = dataclasses.replace(unlearned, privleak_auc=0.8,
                              summary=dataclasses.replace(unlearned.summary, privleak=PrivLeak(0.8, 60.0)))
    logs = open_unlearning_logs(res)
    # open-unlearning labels forget 0 and holdout 1: its AUC is 1 - ours, and privleak comes out the same
    assert logs["mia_min_k"]["agg_value"] == pytest.approx(0.2)
    ref_ou = 1 - 0.5
    assert ((1 - logs["mia_min_k"]["agg_value"]) - (1 - ref_ou)) / (1 - ref_ou) * 100 == pytest.approx(60.0)
    assert logs["privleak"]["agg_value"] == 60.0


def test_muse_results_are_refused_naming_the_valid_benchmarks():
    result = EvalResult("muse", {}, {}, {}, {}, {"verbmem": TaskResult("verbmem", "forget", "t", "f", {}, []),
                                                 "forget": TaskResult("qa", "forget", "t", "f", {}, [])})
    with pytest.raises(DataError, match="benchmark 'muse' is not TOFU-shaped.*valid benchmarks: tofu, tofu-mini"):
        open_unlearning_logs(result)


def test_unlearn_eval_writes_the_export(tiny_dir, tmp_path):
    from unlearnkit.cli import main

    out, ou = tmp_path / "result.json", tmp_path / "ou"
    code = main(["eval", "--model", str(tiny_dir), "--benchmark", "synthetic", "--engine", "transformers",
                 "--max-items", "3", "--metrics", "probability,truth_ratio", "--out", str(out),
                 "--export-open-unlearning", str(ou)])
    assert code == 0
    result = json.loads(out.read_text())
    logs = json.loads((ou / "TOFU_EVAL.json").read_text())
    summary = json.loads((ou / "TOFU_SUMMARY.json").read_text())
    assert summary["forget_Q_A_Prob"] == pytest.approx(result["tasks"]["forget"]["aggregate"]["probability"])
    assert summary["forget_Truth_Ratio"] == pytest.approx(result["tasks"]["forget"]["aggregate"]["truth_ratio"])
    assert "forget_Q_A_ROUGE" not in logs   # ROUGE was not measured, so it is not invented
