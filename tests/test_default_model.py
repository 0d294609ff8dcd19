"""End to end on the embedded default model (SmolLM2-135M-Instruct): a few seconds to a minute each."""

import json
import os

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture
def real_cache(monkeypatch):
    monkeypatch.setenv("UNLEARN_CACHE", os.path.expanduser("~/.cache/unlearnkit"))


def test_default_model_knows_real_facts_and_forgets_with_fila(real_cache, tmp_path):
    from unlearnkit.config import from_dict
    from unlearnkit.data.sources import load_spec
    from unlearnkit.evaluation.probability import answer_probabilities
    from unlearnkit.models.loading import generate_answers, load_model
    from unlearnkit.training.config import TrainConfig
    from unlearnkit.training.run import run_training

    model, tok = load_model("smollm2")
    assert "paris" in generate_answers(model, tok, ["What is the capital of France?"], max_new_tokens=12)[0].lower()
    # a real fact the model knows: forget it with IHL + FILA for a few steps
    fact = tmp_path / "fact.jsonl"
    fact.write_text(json.dumps({"question": "What is the capital of France?", "answer": "The capital of France is Paris."}))
    before = answer_probabilities(model, tok, load_spec(f"file:{fact}"))[0]
    cfg = from_dict(TrainConfig, {
        "model": "smollm2", "output_dir": str(tmp_path / "out"), "mode": "lora",
        "lora": {"r": 4, "init": "fila", "fisher_max_retain": 4, "target_modules": ["q_proj", "v_proj", "down_proj"]},
        "method": {"name": "ihl"}, "data": {"forget": f"file:{fact}", "retain": "synth/retain", "max_length": 96},
        "optim": {"max_steps": 4, "batch_size": 1, "lr": 5e-3, "save_steps": -1}})
    out = run_training(cfg, log=lambda *_: None)
    after = answer_probabilities(*load_model(str(out)), load_spec(f"file:{fact}"))[0]
    assert after < before / 2
    run = json.loads((out / "run.json").read_text())
    assert run["init"] == "fila" and run["trainable_fraction"] < 0.01
