"""`unlearn eval` end to end on tiny models: results, forget quality, caching, bad input."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from unlearnkit.config import from_dict
from unlearnkit.errors import ConfigError, DataError, ModelError
from unlearnkit.evaluation.config import EvalConfig
from unlearnkit.evaluation.harness import evaluate

FAST = {"benchmark": "synthetic", "engine": "transformers", "max_items": 4, "max_new_tokens": 6}


def cfg_for(model, **kw) -> EvalConfig:
    return from_dict(EvalConfig, {"model": str(model), **FAST, **kw})


@pytest.fixture(scope="module")
def other_model(tmp_path_factory, tiny_tokenizer_factory, tiny_model_factory):
    """Same architecture and tokenizer as `tiny`, different weights: a stand-in retain model."""
    path = tmp_path_factory.mktemp("tiny-other")
    tok = tiny_tokenizer_factory()
    tiny_model_factory(len(tok), seed=1).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_synthetic_results_are_complete(tiny_dir, tiny, tmp_path):
    out = tmp_path / "r.json"
    res = evaluate(cfg_for(tiny_dir), out=str(out), log=lambda *_: None).to_json()
    assert json.loads(out.read_text()) == json.loads(json.dumps(res))   # the file is the result, whole
    assert res["tasks"].keys() == {"forget", "retain"}
    forget = res["tasks"]["forget"]
    assert forget["aggregate"]["n_items"] == 4 and len(forget["items"]) == 4
    for it in forget["items"]:
        assert math.isfinite(it["truth_ratio"]) and it["truth_ratio"] > 0
        assert len(it["average_perturb_loss"]) == len(it["perturb_loss"]) == len(it["num_token_perturb"]) >= 1
        assert isinstance(it["generated_text"][1], str) and 0 <= it["rougeL_recall"] <= 1
        assert "rougeL_recall_paraphrased_question" in it
    agg = forget["aggregate"]
    assert {"probability", "rougeL_recall", "truth_ratio", "exact_memorization", "extraction_strength",
            "rougeL_recall_paraphrased_question"} <= set(agg)
    assert res["model"]["fingerprint"] and res["tasks"]["retain"]["fingerprint"]
    assert res["config"]["benchmark"] == "synthetic" and "torch" in res["versions"]
    s = res["summary"]
    assert s["forget_quality"] is None and "--retain-eval" in s["forget_quality_reason"]
    assert sorted(s["model_utility_components"]) == ["retain.probability", "retain.rougeL_recall", "retain.truth_ratio"]


def test_probabilities_agree_with_the_training_side_formula(tiny_dir, tiny):
    """Token-tree scoring vs the plain padded forward used since the weight-level issue."""
    from unlearnkit.data.sources import load_spec
    from unlearnkit.evaluation.probability import answer_probabilities

    model, tok = tiny
    res = evaluate(cfg_for(tiny_dir, metrics=["probability"]), log=lambda *_: None).to_json()
    records = load_spec("synth/forget")[:4]
    expected = answer_probabilities(model, tok, records)
    got = [it["probability"] for it in res["tasks"]["forget"]["items"]]
    assert got == pytest.approx(expected, rel=1e-4)
    assert "generated_text" not in res["tasks"]["forget"]["items"][0]  # no generation metric asked


def test_forget_quality_against_retain_results(tiny_dir, other_model, tmp_path):
    own = tmp_path / "own.json"
    evaluate(cfg_for(tiny_dir), out=str(own), log=lambda *_: None)
    same = evaluate(cfg_for(tiny_dir, retain_eval=str(own)), log=lambda *_: None).to_json()["summary"]
    assert same["forget_quality"] == pytest.approx(1.0) and same["ks_statistic"] == 0.0
    other = evaluate(cfg_for(tiny_dir, retain_eval=f"model:{other_model}"), log=lambda *_: None).to_json()["summary"]
    assert 0 <= other["forget_quality"] <= 1 and other["ks_statistic"] > 0
    assert other["forget_quality_reference"] == f"model:{other_model}"
    # retain results for a different forget set are refused, not compared
    mismatch = evaluate(cfg_for(tiny_dir, retain_eval=str(own), forget="synth/forget?seed=5",
                                retain="synth/retain?seed=5"), log=lambda *_: None).to_json()["summary"]
    assert mismatch["forget_quality"] is None and "different forget set" in mismatch["forget_quality_reason"]


def test_results_are_cached_by_weights_and_config(tiny_dir, other_model):
    logs = []
    evaluate(cfg_for(tiny_dir), log=logs.append)
    evaluate(cfg_for(tiny_dir), log=logs.append)
    assert sum("(cached)" in m for m in logs) == 1
    evaluate(cfg_for(tiny_dir, max_new_tokens=5), log=logs.append)
    evaluate(cfg_for(other_model), log=logs.append)
    assert sum("(cached)" in m for m in logs) == 1


def test_failure_leaves_no_results(tiny_dir, tmp_path, monkeypatch):
    import unlearnkit.evaluation.teacher_forcing as tf
    from unlearnkit.models.catalog import cache_root

    calls = []

    def boom(*a, **k):
        calls.append(1)
        raise RuntimeError("interrupted")

    real = tf.score_continuations
    monkeypatch.setattr(tf, "score_continuations", boom)
    out, evals = tmp_path / "r.json", cache_root() / "evals"
    with pytest.raises(RuntimeError, match="interrupted"):
        evaluate(cfg_for(tiny_dir), out=str(out), log=lambda *_: None)
    assert calls, "the evaluation never reached the scoring step it was meant to fail in"
    assert not out.exists() and not (evals.exists() and list(evals.iterdir()))
    # not interrupted, the same evaluation writes both: the checks above looked in the right places
    monkeypatch.setattr(tf, "score_continuations", real)
    evaluate(cfg_for(tiny_dir), out=str(out), log=lambda *_: None)
    assert out.is_file() and len(list(evals.glob("*.json"))) == 1


def test_user_files_without_perturbations(tiny_dir, tmp_path):
    f = tmp_path / "forget.jsonl"
    f.write_text(json.dumps({"question": "Who is Kalo Mirten?", "answer": "A glassblower from Ghent."}) + "\n")
    res = evaluate(cfg_for(tiny_dir, benchmark="files", forget=f"file:{f}"), log=lambda *_: None).to_json()
    item = res["tasks"]["forget"]["items"][0]
    assert "truth_ratio" not in item and math.isfinite(item["probability"])
    assert res["summary"]["forget_quality"] is None


def test_muse_directory(tiny_dir, tmp_path):
    root = tmp_path / "muse"
    texts = [f"Kalo Mirten built a lighthouse in Ghent in {1900 + i} and sailed to Porto." for i in range(4)]
    other = [f"Sa Vorqui baked bread in Hobart every {d}." for d in ("Monday", "Tuesday", "Friday", "Sunday")]
    for name, data in {
        "verbmem/forget.json": [{"prompt": t[:20], "gt": t[20:]} for t in texts],
        "knowmem/forget_qa.json": [{"question": "Where did Kalo Mirten build?", "answer": "Ghent"}],
        "knowmem/forget_qa_icl.json": [{"question": "Who baked?", "answer": "Sa Vorqui"}],
        "privleak/forget.json": texts,
        "privleak/holdout.json": [{"text": t} for t in other],
        "knowmem/retain2_qa.json": [{"question": "What did Sa Vorqui bake?", "answer": "bread"}],
        "knowmem/retain2_qa_icl.json": [{"question": "Where did Sa Vorqui bake?", "answer": "Hobart"}],
        "privleak/retain2.json": other[:2],
    }.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(json.dumps(data))
    res = evaluate(cfg_for(tiny_dir, benchmark="muse", muse_dir=str(root)), out=str(tmp_path / "m.json"),
                   log=lambda *_: None).to_json()
    assert set(res["tasks"]) == {"verbmem", "knowmem_forget", "knowmem_retain", "privleak_forget", "privleak_holdout",
                                 "privleak_retain"}
    verbmem = res["tasks"]["verbmem"]["aggregate"]
    assert 0 <= verbmem["rougeL_f1"] <= 1
    assert 0 <= verbmem["exact_memorization"] <= 1 and 0 <= verbmem["extraction_strength"] <= 1
    assert "rougeL_f1" in res["tasks"]["knowmem_forget"]["aggregate"]
    assert 0 <= res["summary"]["mia_auc"] <= 1
    assert res["summary"]["privleak"] is None and "retain" in res["summary"]["privleak_reason"]
    reference = tmp_path / "retain.json"  # a retain model whose MIA AUC was 0.5
    reference.write_text(json.dumps({"tasks": {}, "privleak_auc": 0.5}))
    again = evaluate(cfg_for(tiny_dir, benchmark="muse", muse_dir=str(root), retain_eval=str(reference)),
                     log=lambda *_: None).to_json()["summary"]
    assert again["privleak"] == pytest.approx((again["mia_auc"] - 0.5) / 0.5 * 100)


def test_bad_input_is_named(tiny_dir, tmp_path):
    with pytest.raises(ConfigError, match="valid benchmarks: .*tofu-mini"):
        evaluate(cfg_for(tiny_dir, benchmark="tofu-max"), log=lambda *_: None)
    with pytest.raises(ConfigError, match="valid metrics"):
        cfg_for(tiny_dir, metrics=["rouge", "bleu"])
    with pytest.raises(ConfigError, match="needs forget"):
        evaluate(cfg_for(tiny_dir, benchmark="files"), log=lambda *_: None)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(DataError, match="empty"):
        evaluate(cfg_for(tiny_dir, benchmark="files", forget=f"file:{empty}"), log=lambda *_: None)
    with pytest.raises(ConfigError, match="forget01"):
        evaluate(cfg_for(tiny_dir, benchmark="tofu", forget_split="forget20"), log=lambda *_: None)
    with pytest.raises(DataError, match="MUSE directory"):
        evaluate(cfg_for(tiny_dir, benchmark="muse", muse_dir=str(tmp_path / "none")), log=lambda *_: None)
    (tmp_path / "notamodel").mkdir()
    with pytest.raises(ModelError, match="config.json"):
        evaluate(cfg_for(tmp_path / "notamodel"), log=lambda *_: None)
    with pytest.raises(DataError, match="not an `unlearn eval` result"):
        (tmp_path / "x.json").write_text("{}")
        evaluate(cfg_for(tiny_dir, retain_eval=str(tmp_path / "x.json")), log=lambda *_: None)


def test_tofu_mini_sets():
    from unlearnkit.evaluation.benchmarks import build_tasks

    tasks = {t.name: t for t in build_tasks(EvalConfig(benchmark="tofu-mini"))}
    assert {k: len(t.items) for k, t in tasks.items()} == {"forget": 40, "retain": 360, "real_authors": 100,
                                                          "world_facts": 117, "privleak_forget": 40,
                                                          "privleak_holdout": 40}
    forget_q = {r.question for r in tasks["forget"].items}
    assert not forget_q & {r.question for r in tasks["retain"].items}
    assert all(len(r.extra["perturbed_answer"]) == 5 for r in tasks["forget"].items + tasks["retain"].items)
    assert {t.kind for t in tasks.values()} == {"qa", "options", "text"}
    # membership inference: the forget answers (members) against answers the target never trained on
    members = {r.answer for r in tasks["privleak_forget"].items}
    assert members == {r.answer for r in tasks["forget"].items}
    trained = {r.answer for r in tasks["forget"].items + tasks["retain"].items}
    assert not trained & {r.answer for r in tasks["privleak_holdout"].items}
    assert (tasks["privleak_forget"].role, tasks["privleak_holdout"].role) == ("forget", "holdout")


def test_cli_eval_prints_a_table(tiny_dir, tmp_path):
    out = tmp_path / "cli.json"
    proc = subprocess.run([sys.executable, "-m", "unlearnkit.cli", "eval", "--model", str(tiny_dir), "--benchmark",
                           "synthetic", "--engine", "transformers", "--max-items", "2", "--set", "max_new_tokens=4",
                           "--out", str(out), "--tofu-logs", str(tmp_path / "logs")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    from scipy.stats import ks_2samp

    from unlearnkit.evaluation.tofu_logs import LOG_FILES, forget_quality_from_logs

    # our results, written in TOFU's format and read back by the TOFU-log path, against a reference log
    # written here: the KS p-value agrees with one computed from results.json's own per-item losses
    items = json.loads(out.read_text())["tasks"]["forget"]["items"]
    ours = [math.exp(it["avg_paraphrased_loss"] - sum(it["average_perturb_loss"]) / len(it["average_perturb_loss"]))
            for it in items]
    assert [it["truth_ratio"] for it in items] == pytest.approx(ours, rel=1e-6)
    reference = {"avg_paraphrased_loss": {"0": 0.5, "1": 1.0, "2": 2.0},     # R = e^2, e^3, e^0.5
                 "average_perturb_loss": {"0": [2.5, 2.5], "1": [4.0], "2": [2.0, 3.0]}}
    (tmp_path / "ref").mkdir()
    (tmp_path / "ref" / LOG_FILES["forget"]).write_text(json.dumps(reference))
    fq = forget_quality_from_logs(tmp_path / "logs", tmp_path / "ref")
    expected = ks_2samp(ours, [math.exp(2.0), math.exp(3.0), math.exp(0.5)])
    assert fq["forget_quality"] == pytest.approx(expected.pvalue) and fq["ks_statistic"] == pytest.approx(expected.statistic)
    assert fq["n_unlearned"] == 2 and fq["n_retain"] == 3
    assert "forget quality  missing" in proc.stdout and "truth ratio" in proc.stdout
    assert json.loads(out.read_text())["tasks"]["forget"]["aggregate"]["n_items"] == 2
    bad = subprocess.run([sys.executable, "-m", "unlearnkit.cli", "eval", "--benchmark", "nope"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "valid benchmarks" in bad.stderr


@pytest.mark.slow
def test_vllm_engine_generates_what_transformers_generates(vllm_sized_model, tmp_path):
    """The default engine (vLLM, fp32 here) and transformers give the same greedy answers, on a tiny
    model fine-tuned briefly so that it says something (a random one only repeats a newline)."""
    from unlearnkit.training.config import TrainConfig
    from unlearnkit.training.run import run_training

    trained = run_training(from_dict(TrainConfig, {
        "model": str(vllm_sized_model), "output_dir": str(tmp_path / "ft"), "method": {"name": "finetune"},
        "data": {"train": "synth/full", "max_length": 96},
        "optim": {"precision": "fp32", "save_steps": -1, "batch_size": 4, "max_steps": 60, "lr": 3e-3}}),
        log=lambda *_: None)
    common = {"model": str(trained), **FAST, "max_new_tokens": 12, "dtype": "float32", "metrics": ["rouge"]}
    v = evaluate(from_dict(EvalConfig, {**common, "engine": "vllm"}), log=lambda *_: None)
    t = evaluate(from_dict(EvalConfig, common), log=lambda *_: None)
    for name in ("forget", "retain"):
        gv = [it.generated for it in v.tasks[name].items]
        gt = [it.generated for it in t.tasks[name].items]
        assert gv == gt and sum(map(bool, gv)) >= 2


def test_the_retain_reference_is_never_measured_through_the_guard(monkeypatch, tiny_dir):
    """`--guard P --retain-eval model:R`: R is the never-trained reference as it is, not R behind P."""
    from unlearnkit.evaluation import harness

    seen = []
    monkeypatch.setattr(harness, "cached_measure",
                        lambda cfg, log=print: seen.append(cfg) or harness.Cached({"tasks": {}}, None))
    monkeypatch.setattr(harness, "reference_from_result", lambda res, source: {"source": source})
    harness.load_retain_reference("model:other", cfg_for(tiny_dir, guard="some/policy", retain_eval="model:other",
                                                         engine="vllm"))
    assert [(c.model, c.guard, c.retain_eval) for c in seen] == [("other", None, None)]
