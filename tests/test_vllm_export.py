"""A merged unlearning artefact loads in vLLM and generates what transformers generates."""

import pytest


@pytest.mark.slow
def test_fila_artefact_generates_identically_in_vllm(vllm_sized_model, tmp_path):
    from unlearnkit.config import from_dict
    from unlearnkit.evaluation.vllm_generate import generate_in_subprocess
    from unlearnkit.models.loading import generate_answers, load_model
    from unlearnkit.training.config import TrainConfig
    from unlearnkit.training.run import run_training

    data = {"forget": "synth/forget?people=4&forget=1", "retain": "synth/retain?people=4&forget=1", "max_length": 96}
    optim = {"precision": "fp32", "save_steps": -1, "batch_size": 4}
    target = run_training(from_dict(TrainConfig, {
        "model": str(vllm_sized_model), "output_dir": str(tmp_path / "target"), "method": {"name": "finetune"},
        "data": {"train": "synth/full?people=4&forget=1", "max_length": 96}, "optim": {**optim, "max_steps": 30, "lr": 3e-3}}),
        log=lambda *_: None)
    unlearned = run_training(from_dict(TrainConfig, {
        "model": str(target), "output_dir": str(tmp_path / "ihl_fila"), "method": {"name": "ihl"},
        "mode": "lora", "lora": {"r": 4, "init": "fila"}, "data": data, "optim": {**optim, "max_steps": 3, "lr": 1e-3}}),
        log=lambda *_: None)
    from unlearnkit.data.sources import load_spec

    questions = [r.question for r in load_spec("synth/full?people=4&forget=1")[::9]]
    got = generate_in_subprocess(str(unlearned), questions, max_tokens=12, dtype="float32")
    model, tok = load_model(str(unlearned))
    expected = generate_answers(model, tok, questions, max_new_tokens=12)
    assert len(got["answers"]) == len(questions)
    assert all(ids for ids in got["token_ids"])
    assert [a.strip() for a in got["answers"]] == expected
