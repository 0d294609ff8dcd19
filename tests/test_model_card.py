"""The Hugging Face model card every finished run carries (training/model_card.py)."""

import json

import yaml

from unlearnkit.config import from_dict
from unlearnkit.data.sources import load_spec
from unlearnkit.evaluation.benchmarks import Task
from unlearnkit.training.config import TrainConfig
from unlearnkit.training.model_card import add_evaluation, records_fingerprint
from unlearnkit.training.run import run_training

FORGET, RETAIN = "synth/forget?people=4&forget=1", "synth/retain?people=4&forget=1"


def front_matter(path):
    text = path.read_text()
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1]), text


def test_a_finished_run_carries_a_model_card_and_evaluation_results_join_it(tiny_dir, tmp_path):
    cfg = from_dict(TrainConfig, {
        "model": str(tiny_dir), "output_dir": str(tmp_path / "npo-run"), "method": {"name": "npo"},
        "mode": "lora", "lora": {"r": 2, "init": "fila"},
        "data": {"forget": FORGET, "retain": RETAIN, "max_length": 96},
        "optim": {"max_steps": 1, "batch_size": 4, "precision": "fp32", "save_steps": -1}})
    out = run_training(cfg, log=lambda *_: None)
    meta, text = front_matter(out / "README.md")
    assert meta["base_model"] == str(tiny_dir) and meta["library_name"] == "transformers"
    assert {"unlearning", "npo", "fila"} <= set(meta["tags"])
    forget = load_spec(FORGET)
    # the fingerprint `unlearn eval` gives the same set
    assert meta["unlearning"]["forget_fingerprint"] == records_fingerprint(forget) == Task("f", "qa", forget, FORGET).fingerprint()
    assert meta["unlearning"]["forget_set"] == FORGET and meta["unlearning"]["steps"] == 1
    assert "model-index" not in meta and "not evaluated yet" in text

    result = {"benchmark": "synthetic",
              "tasks": {"forget": {"fingerprint": "abc", "aggregate": {"n_items": 10, "rougeL_recall": 0.25,
                                                                        "probability": 0.5}},
                        "retain": {"aggregate": {"n_items": 30, "rougeL_recall": 0.75, "note": "text"}}},
              "summary": {"model_utility": 0.4, "forget_quality": None}}
    add_evaluation(out, result)
    meta, text = front_matter(out / "README.md")
    [entry] = meta["model-index"]
    scores = {(r["dataset"]["split"] if "split" in r["dataset"] else None, m["type"]): m["value"]
              for r in entry["results"] for m in r["metrics"]}
    assert scores == {("forget", "rougeL_recall"): 0.25, ("forget", "probability"): 0.5,
                      ("retain", "rougeL_recall"): 0.75, (None, "model_utility"): 0.4}
    assert {r["dataset"]["type"] for r in entry["results"]} == {"synthetic"}
    assert "unlearning" in meta["tags"] and "4 metrics in the model-index" in text
    assert entry["name"] == "npo-run" and meta["unlearning"]["forget_fingerprint"] == records_fingerprint(forget)
    assert json.loads((out / "run.json").read_text())["method"] == "npo"  # the manifest is left as it was


def test_unlearn_eval_of_a_run_writes_its_numbers_into_the_card_and_a_guarded_one_does_not(tiny_dir, tmp_path):
    from unlearnkit.cli import main

    cfg = from_dict(TrainConfig, {
        "model": str(tiny_dir), "output_dir": str(tmp_path / "ft-run"), "method": {"name": "finetune"},
        "data": {"train": FORGET, "max_length": 64},
        "optim": {"max_steps": 1, "batch_size": 4, "precision": "fp32", "save_steps": -1}})
    out = run_training(cfg, log=lambda *_: None)
    result_file = tmp_path / "r.json"
    assert main(["eval", "--model", str(out), "--benchmark", "synthetic", "--engine", "transformers",
                 "--max-items", "2", "--metrics", "probability", "--out", str(result_file)]) == 0
    meta, text = front_matter(out / "README.md")
    [entry] = meta["model-index"]
    result = json.loads(result_file.read_text())
    scores = {(r["dataset"]["split"], m["type"]): m["value"] for r in entry["results"] for m in r["metrics"]}
    assert scores[("forget", "probability")] == result["tasks"]["forget"]["aggregate"]["probability"]
    assert result["tasks"]["forget"]["fingerprint"] in text

    # weights measured behind a guard are not the checkpoint's numbers: the card is left as it is
    import dataclasses

    from unlearnkit.cli import _card_with_evaluation
    from unlearnkit.evaluation.config import EvalConfig
    from unlearnkit.evaluation.results import EvalResult

    (out / "README.md").write_text("card as it was")
    guarded = EvalConfig(model=str(out), guard="some/policy")
    assert _card_with_evaluation(guarded, EvalResult.from_json(result)) is None
    assert _card_with_evaluation(dataclasses.replace(guarded, guard=None), EvalResult.from_json(result)) == out / "README.md"
    assert (out / "README.md").read_text() != "card as it was"
