"""The trainer end to end on a tiny model: every method, LoRA/FILA, artefacts, resume, bad input."""

import json

import pytest

from unlearnkit.config import from_dict
from unlearnkit.errors import DataError, RunError
from unlearnkit.training.config import TrainConfig
from unlearnkit.training.methods import METHODS
from unlearnkit.training.run import run_training

FORGET, RETAIN = "synth/forget?people=4&forget=1", "synth/retain?people=4&forget=1"
# the tiny model has 2 decoder layers of width 32 (conftest): RMU steers block 0 to a target
# of norm 4 with alpha 1 (the method's defaults, layer 7, c = 270, alpha 1200, are sized for SmolLM2-135M;
# configs/train/rmu.yaml lowers alpha to 30, tuned on TOFU-mini)
TINY_METHOD_PARAMS = {"rmu": {"layer": 0, "steering_coeff": 4.0, "retain_weight": 1.0}}


def make_cfg(tiny_dir, out, method="ihl", **extra):
    data = {"forget": FORGET, "retain": RETAIN, "max_length": 96}
    if method == "finetune":
        data = {"train": FORGET, "max_length": 96}
    method_cfg = {"name": method, **TINY_METHOD_PARAMS.get(method, {})}
    cfg = {"model": str(tiny_dir), "output_dir": str(out), "method": method_cfg,
           "data": data, "optim": {"max_steps": 2, "batch_size": 4, "lr": 1e-3, "precision": "fp32",
                                   "save_steps": -1, "logging_steps": 1}}
    for key, value in extra.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    return from_dict(TrainConfig, cfg)


def quiet(*_):
    pass


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_trains_and_writes_a_complete_artefact(tiny_dir, tmp_path, method):
    out = run_training(make_cfg(tiny_dir, tmp_path / "run", method), log=quiet)
    for name in ("model.safetensors", "config.json", "tokenizer.json", "config.yaml", "train_log.jsonl", "run.json"):
        assert (out / name).is_file(), name
    run = json.loads((out / "run.json").read_text())
    assert run["method"] == method and run["steps"] == 2
    # RMU's forward stops at its block: what lies above it is frozen (freeze_unreached), the rest trains
    assert (run["trainable_fraction"] < 1.0) if METHODS[method].needs_hidden_layer else run["trainable_fraction"] == 1.0
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert any("forget_loss" in entry for entry in log)
    assert not (tmp_path / "run.partial").exists()


def test_training_moves_forget_probability_the_right_way(tiny_dir, tmp_path):
    from unlearnkit.data.sources import load_spec
    from unlearnkit.evaluation.probability import answer_probabilities, mean
    from unlearnkit.models.loading import load_model

    forget = load_spec(FORGET)
    model, tok = load_model(str(tiny_dir))
    before = mean(answer_probabilities(model, tok, forget))
    tuned = run_training(make_cfg(tiny_dir, tmp_path / "ft", "finetune", optim={"max_steps": 15}), log=quiet)
    after_ft = mean(answer_probabilities(*load_model(str(tuned)), forget))
    forgot = run_training(make_cfg(tuned, tmp_path / "ga", "grad_diff", optim={"max_steps": 10}), log=quiet)
    after_ga = mean(answer_probabilities(*load_model(str(forgot)), forget))
    assert after_ft > before and after_ga < after_ft


@pytest.mark.parametrize("init", ["default", "fila"])
def test_lora_runs_export_merged_checkpoints(tiny_dir, tmp_path, init):
    from transformers import AutoModelForCausalLM

    cfg = make_cfg(tiny_dir, tmp_path / "lora", "npo", mode="lora", lora={"r": 2, "init": init})
    out = run_training(cfg, log=quiet)
    run = json.loads((out / "run.json").read_text())
    assert 0 < run["trainable_fraction"] < 0.5 and run["init"] == init
    assert not list(out.glob("adapter_*"))  # merged, not an adapter
    merged = AutoModelForCausalLM.from_pretrained(out)
    base = AutoModelForCausalLM.from_pretrained(tiny_dir)
    assert set(merged.state_dict()) == set(base.state_dict())


def test_merged_checkpoint_computes_what_the_trained_adapter_computed(tiny_dir, tmp_path):
    """The merged checkpoint a LoRA run writes gives the trained PEFT model's logits (read at the end of
    training, before the merge), and those differ from the base model's: the adapter moved something."""
    import torch
    from transformers import AutoModelForCausalLM, TrainerCallback

    inputs = torch.tensor([[5, 17, 42, 99, 7, 3], [11, 250, 64, 8, 120, 30]])
    logits = {}

    class Capture(TrainerCallback):
        def on_train_end(self, args, state, control, model=None, **kwargs):
            model.eval()
            with torch.no_grad():
                logits["peft"] = model(input_ids=inputs.to(model.device)).logits.cpu()   # on CUDA the model is there

    cfg = make_cfg(tiny_dir, tmp_path / "lora", "grad_diff", mode="lora", lora={"r": 4},
                   optim={"max_steps": 4, "lr": 2e-2})
    out = run_training(cfg, log=quiet, callbacks=[Capture()])
    with torch.no_grad():
        merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()(input_ids=inputs).logits
        base = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32).eval()(input_ids=inputs).logits
    assert (logits["peft"] - base).abs().max() > 1e-3
    torch.testing.assert_close(merged, logits["peft"], rtol=1e-4, atol=1e-4)


def test_fila_statistics_are_cached(tiny_dir, tmp_path):
    from unlearnkit.models.catalog import cache_root

    cfg = make_cfg(tiny_dir, tmp_path / "a", "ihl", mode="lora", lora={"r": 2, "init": "fila"})
    run_training(cfg, log=quiet)
    files = sorted((cache_root() / "fisher").glob("*.safetensors"))
    assert len(files) == 2  # forget and retain
    stamps = [f.stat().st_mtime_ns for f in files]
    run_training(make_cfg(tiny_dir, tmp_path / "b", "ihl", mode="lora", lora={"r": 2, "init": "fila"}), log=quiet)
    assert [f.stat().st_mtime_ns for f in sorted((cache_root() / "fisher").glob("*.safetensors"))] == stamps


class Interrupt(Exception):
    pass


def test_interrupted_run_resumes_from_last_complete_checkpoint(tiny_dir, tmp_path, monkeypatch):
    from unlearnkit.training import trainer as trainer_mod

    cfg = make_cfg(tiny_dir, tmp_path / "run", "grad_diff", optim={"max_steps": 6, "save_steps": 2})
    original = trainer_mod.UnlearnTrainer.training_step
    calls = {"n": 0}

    def crashing_step(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise Interrupt("power cut")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(trainer_mod.UnlearnTrainer, "training_step", crashing_step)
    with pytest.raises(Interrupt):
        run_training(cfg, log=quiet)
    assert not (tmp_path / "run").exists()  # nothing half-written where the artefact goes
    partial = tmp_path / "run.partial"
    assert (partial / "checkpoints" / "checkpoint-4" / "CHECKPOINT_COMPLETE").is_file()
    # a checkpoint cut off mid-write (no marker) is never picked
    (partial / "checkpoints" / "checkpoint-5").mkdir()
    with pytest.raises(RunError, match="--resume"):
        run_training(cfg, log=quiet)
    monkeypatch.setattr(trainer_mod.UnlearnTrainer, "training_step", original)
    out = run_training(cfg, resume=True, log=quiet)
    run = json.loads((out / "run.json").read_text())
    assert run["steps"] == 6 and run["resumed_from"].endswith("checkpoint-4")
    assert not partial.exists()


def test_resume_refuses_a_different_config(tiny_dir, tmp_path, monkeypatch):
    (tmp_path / "run.partial").mkdir()
    (tmp_path / "run.partial" / "config.yaml").write_text("model: something-else\n")
    with pytest.raises(RunError, match="config differs"):
        run_training(make_cfg(tiny_dir, tmp_path / "run"), resume=True, log=quiet)


def test_finished_output_is_not_overwritten_silently(tiny_dir, tmp_path):
    cfg = make_cfg(tiny_dir, tmp_path / "run", "grad_ascent")
    run_training(cfg, log=quiet)
    with pytest.raises(RunError, match="already holds a finished run"):
        run_training(cfg, log=quiet)
    run_training(cfg, overwrite=True, log=quiet)


def test_bad_inputs(tiny_dir, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(DataError, match="forget set.*empty"):
        run_training(make_cfg(tiny_dir, tmp_path / "a", data={"forget": f"file:{empty}"}), log=quiet)
    with pytest.raises(DataError, match="no answer tokens"):
        run_training(make_cfg(tiny_dir, tmp_path / "b", data={"max_length": 10}), log=quiet)
    from unlearnkit.errors import ModelError

    with pytest.raises(ModelError, match="not found"):
        run_training(make_cfg("./no/such/model", tmp_path / "c"), log=quiet)
    # refused input leaves nothing behind that would block the corrected run
    assert not any(tmp_path.glob("*.partial"))


def test_idk_dpo_pairs_each_forget_question_with_a_refusal(tiny_dir):
    from unlearnkit.data.sources import load_spec
    from unlearnkit.models.loading import load_tokenizer
    from unlearnkit.training.run import prepare_data

    tok = load_tokenizer(str(tiny_dir))
    cfg = make_cfg(tiny_dir, "x", "idk_dpo")
    forget, retain, idk = prepare_data(cfg, tok, True, True)
    assert len(idk) == len(forget) and len(retain) == len(load_spec(RETAIN))
    # same prompt, different answer
    first_label = next(i for i, t in enumerate(forget[0]["labels"]) if t != -100)
    assert idk[0]["input_ids"][:first_label] == forget[0]["input_ids"][:first_label]
    assert idk[0]["input_ids"] != forget[0]["input_ids"]


def test_cached_runs_are_reused_until_their_config_or_base_changes(tiny_dir, tmp_path, capsys):
    """`unlearn train --cached`: a finished run is reused while nothing that determines it changed; a
    changed config, and a changed `run:` base (the cached run it starts from), each train a new run."""
    from pathlib import Path

    import yaml

    from unlearnkit.cli import main
    from unlearnkit.config import to_dict
    from unlearnkit.errors import ModelError
    from unlearnkit.training.cache import resolve_model

    def write(name, cfg):
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump({k: v for k, v in cfg.items() if k != "output_dir"}))
        return path

    def train(path, *overrides):
        assert main(["train", "--cached", "--config", str(path), *overrides]) == 0
        captured = capsys.readouterr()
        return Path(captured.out.strip().splitlines()[-1]), "(cached)" in captured.err

    base_cfg = to_dict(make_cfg(tiny_dir, "x", "finetune"))
    base = write("base", base_cfg)
    first, cached = train(base)
    assert not cached and (first / "run.json").is_file()
    stamp = (first / "run.json").stat().st_mtime_ns
    again, cached = train(base)
    assert cached and again == first and (first / "run.json").stat().st_mtime_ns == stamp
    other, cached = train(base, "optim.lr=0.002")
    assert not cached and other != first and first.is_dir()

    child = write("child", {**to_dict(make_cfg(tiny_dir, "x", "ihl")), "model": f"run:{base}"})
    built, cached = train(child)
    assert not cached and resolve_model(f"run:{base}") == str(first)
    assert train(child) == (built, True)
    write("base", {**base_cfg, "optim": {**base_cfg["optim"], "max_steps": 3}})   # the base config changed
    with pytest.raises(ModelError, match="not built yet"):
        resolve_model(f"run:{base}")
    new_base, cached = train(base)
    assert not cached and new_base != first
    rebuilt, cached = train(child)
    assert not cached and rebuilt != built


def test_a_base_checkpoint_resaved_in_place_trains_a_new_run(tiny_dir, tiny_model_factory, tmp_path, capsys):
    """The run cache keys a local base model by its weights' bytes too: the same config over a base whose
    weights were re-saved in place (its config.json unchanged) trains a new run, not the stale one."""
    import shutil
    from pathlib import Path

    import yaml

    from unlearnkit.cli import main
    from unlearnkit.config import to_dict
    from unlearnkit.training.cache import config_hash

    base = tmp_path / "base"
    shutil.copytree(tiny_dir, base)
    cfg = make_cfg(base, "x", "finetune")
    path = tmp_path / "ft.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in to_dict(cfg).items() if k != "output_dir"}))

    def train():
        assert main(["train", "--cached", "--config", str(path)]) == 0
        captured = capsys.readouterr()
        return Path(captured.out.strip().splitlines()[-1]), "(cached)" in captured.err

    first, cached = train()
    assert not cached and train() == (first, True)
    key, config = config_hash(cfg), (base / "config.json").read_bytes()
    tiny_model_factory(json.loads(config)["vocab_size"], seed=1).save_pretrained(base)   # same shapes, new values
    assert (base / "config.json").read_bytes() == config          # what the key held before: unchanged
    assert config_hash(cfg) != key
    rebuilt, cached = train()
    assert not cached and rebuilt != first and (rebuilt / "run.json").is_file()
    assert train() == (rebuilt, True)


# --- WGA, SatImp, RMU ---

@pytest.fixture(scope="module")
def tuned_tiny(tiny_dir, tmp_path_factory):
    """The tiny model fine-tuned on the forget set, so its answers have probability to lose
    (token-weighted ascent barely moves a random model: its weights p^beta are ~0)."""
    out = tmp_path_factory.mktemp("tuned") / "ft"
    return run_training(make_cfg(tiny_dir, out, "finetune", optim={"max_steps": 15, "lr": 1e-2}), log=quiet)


def forget_probability(model_dir):
    from unlearnkit.data.sources import load_spec
    from unlearnkit.evaluation.probability import answer_probabilities, mean
    from unlearnkit.models.loading import load_model

    return mean(answer_probabilities(*load_model(str(model_dir)), load_spec(FORGET)))


def logged(out, key):
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    return [entry[key] for entry in log if key in entry]


@pytest.mark.parametrize("mode", ["full", "lora"])
@pytest.mark.parametrize("method", ["wga", "satimp"])
def test_weighted_ascent_lowers_forget_probability(tuned_tiny, tmp_path, method, mode):
    extra = {"mode": mode, "lora": {"r": 4}} if mode == "lora" else {}
    lr = 3e-3 if mode == "lora" else 1e-3
    out = run_training(make_cfg(tuned_tiny, tmp_path / method, method, optim={"max_steps": 6, "lr": lr}, **extra),
                       log=quiet)
    assert forget_probability(out) < forget_probability(tuned_tiny)
    assert len(logged(out, "retain_loss")) == 6


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_rmu_pulls_forget_activations_to_the_target_and_leaves_later_layers(tuned_tiny, tmp_path, mode):
    import torch
    from transformers import AutoModelForCausalLM

    extra = {"mode": mode, "lora": {"r": 4}} if mode == "lora" else {}
    lr = 1e-2 if mode == "lora" else 3e-3
    out = run_training(make_cfg(tuned_tiny, tmp_path / "rmu", "rmu", optim={"max_steps": 8, "lr": lr}, **extra),
                       log=quiet)
    forget_loss = logged(out, "forget_loss")
    assert len(forget_loss) == 8 and forget_loss[-1] < 0.8 * forget_loss[0]
    assert len(logged(out, "retain_loss")) == 8
    # the loss only reaches blocks 0..layer and the embeddings: block 1 and the final norm are untouched
    before = AutoModelForCausalLM.from_pretrained(tuned_tiny).state_dict()
    after = AutoModelForCausalLM.from_pretrained(out).state_dict()
    later = [k for k in before if k.startswith(("model.layers.1.", "model.norm."))]
    assert later and all(torch.equal(before[k], after[k]) for k in later)
    assert not torch.equal(before["model.layers.0.mlp.down_proj.weight"], after["model.layers.0.mlp.down_proj.weight"])


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("mode", ["full", "lora"])
def test_rmu_freezes_exactly_what_its_forward_does_not_reach(tiny_model_factory, mode, tied):
    """Blocks above the steered one, the final norm and an untied LM head get no gradient from a
    forward stopped at block 0, so they are frozen (DDP without the unused-parameter search would
    wait for their gradients forever); block 0 and the embeddings, which it reaches, stay trainable."""
    import torch

    from unlearnkit.training.trainer import freeze_unreached

    model = tiny_model_factory(300)
    if not tied:
        model.config.tie_word_embeddings = False
        model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone())
    if mode == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "down_proj"], task_type="CAUSAL_LM"))
    trainable_before = {n for n, p in model.named_parameters() if p.requires_grad}
    rng_state = torch.get_rng_state()
    batch = {"input_ids": torch.tensor([[5, 6, 7, 8]]), "attention_mask": torch.ones(1, 4, dtype=torch.long)}
    frozen = set(freeze_unreached(model, batch, layer=0))
    assert torch.equal(torch.get_rng_state(), rng_state)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == trainable_before - frozen and all(p.grad is None for p in model.parameters())
    assert frozen and all(".layers.1." in n or ".norm." in n or "lm_head" in n for n in frozen)
    assert not any(".layers.0." in n or "embed_tokens" in n for n in frozen)
    if mode == "full":
        assert any(".layers.1." in n for n in frozen) and any(n.endswith("model.norm.weight") for n in frozen)
        assert ("lm_head.weight" in frozen) == (not tied)
        assert "model.embed_tokens.weight" in trainable and "model.layers.0.mlp.down_proj.weight" in trainable
    else:
        assert frozen == {n for n in trainable_before if ".layers.1." in n}  # layer 1's adapters
        assert any(".layers.0." in n and "lora_" in n for n in trainable)


def test_hidden_at_is_the_block_output_without_running_later_blocks(tiny_model_factory):
    import torch

    from unlearnkit.training.trainer import decoder_layers, hidden_at

    model = tiny_model_factory(300).eval()
    batch = {"input_ids": torch.tensor([[5, 6, 7, 8], [9, 10, 11, 12]]), "attention_mask": torch.ones(2, 4, dtype=torch.long)}
    ran = []
    decoder_layers(model)[1].register_forward_hook(lambda *_: ran.append(1))
    hidden = hidden_at(model, batch, 0)
    assert not ran and len(decoder_layers(model)) == 2  # block 1 skipped, the stack restored
    full = model(**batch, output_hidden_states=True).hidden_states
    torch.testing.assert_close(hidden, full[1])


@pytest.mark.parametrize("freeze", [True, False])
def test_rmu_forward_lets_ddp_reduce_every_trainable_gradient(tiny_model_factory, tmp_path, freeze):
    """Under DDP with the unused-parameter search off (as training/run.py launches it), each RMU step
    must hand every trainable gradient to the reduction: with the unreached parameters frozen it
    does, step after step; left trainable, DDP refuses the second step."""
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from unlearnkit.training.trainer import freeze_unreached, hidden_at

    model = tiny_model_factory(300)
    batch = {"input_ids": torch.tensor([[5, 6, 7, 8]]), "attention_mask": torch.ones(1, 4, dtype=torch.long)}
    if freeze:
        freeze_unreached(model, batch, 0)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        ddp = DistributedDataParallel(model, find_unused_parameters=False)
        reduced = []

        def count(state, bucket):
            reduced.append(bucket.buffer().numel())
            done = torch.futures.Future()
            done.set_result(bucket.buffer())
            return done

        ddp.register_comm_hook(None, count)
        steps = 2
        if not freeze:
            with pytest.raises(RuntimeError, match="finished reduction"):
                for _ in range(steps):
                    hidden_at(ddp, batch, 0).pow(2).mean().backward()
            return
        for _ in range(steps):
            hidden_at(ddp, batch, 0).pow(2).mean().backward()
        assert sum(reduced) == steps * sum(p.numel() for p in model.parameters() if p.requires_grad)
    finally:
        dist.destroy_process_group()


def test_rmu_layer_out_of_range_is_refused_before_anything_is_written(tiny_dir, tmp_path):
    from unlearnkit.config import ConfigError

    cfg = make_cfg(tiny_dir, tmp_path / "run", "rmu")
    cfg.method.layer = 2
    with pytest.raises(ConfigError, match=r"method.layer 2 is out of range.*2 decoder layers.*valid layers are 0\.\.1"):
        run_training(cfg, log=quiet)
    assert not any(tmp_path.iterdir())


def test_new_method_defaults_and_nonsense_values():
    from unlearnkit.config import ConfigError, dump_config
    from unlearnkit.training.config import method_params

    def cfg(**method):
        data = {"forget": FORGET, "retain": RETAIN}
        return from_dict(TrainConfig, {"method": method, "data": data})

    assert method_params(cfg(name="wga")).beta == 1.0
    sat = method_params(cfg(name="satimp"))
    assert (sat.beta, sat.beta2, sat.retain_weight, sat.forget_weight) == (5.0, 1.0, 0.1, 1.0)
    rmu = method_params(cfg(name="rmu"))
    assert (rmu.layer, rmu.steering_coeff, rmu.retain_weight, rmu.seed) == (7, 270.0, 1200.0, 0)
    assert method_params(cfg(name="rmu", retain_weight=50.0)).retain_weight == 50.0
    npo = cfg(name="npo")
    assert npo.method.beta == 0.1 and npo.method.retain_weight == 1.0
    # parameters of other methods stay out of a dump (and so out of cached runs' hashes)
    dumped = dump_config(npo)
    assert "beta: 0.1" in dumped and not any(k in dumped for k in ("beta2", "layer", "steering_coeff"))
    assert "layer: 7" in dump_config(cfg(name="rmu"))
    for method, message in [
        ({"name": "wga", "layer": 3}, r"method.layer is not a parameter of method 'wga' \(it is used by rmu\)"),
        ({"name": "rmu", "beta2": 1.0}, r"method.beta2 is not a parameter of method 'rmu' \(it is used by satimp\)"),
        ({"name": "rmu", "layer": -1}, "layer must be >= 0"),
        ({"name": "rmu", "steering_coeff": 0}, "steering_coeff must be > 0"),
        ({"name": "rmu", "retain_weight": -1}, "must be >= 0"),
        ({"name": "satimp", "beta2": -0.5}, "beta2 must be >= 0"),
        ({"name": "wga", "beta": 0}, "beta must be > 0"),
    ]:
        with pytest.raises(ConfigError, match=message):
            cfg(**method)


# --- reproducibility ---

@pytest.mark.parametrize("mode", ["full", "lora-fila"])
def test_same_seed_gives_the_same_weights_and_another_seed_does_not(tiny_dir, tmp_path, mode):
    """Two runs of one config and seed end in bit-identical weights (data order, retain pairing,
    LoRA init and FILA statistics all follow the seed); a different seed ends elsewhere."""
    import torch
    from safetensors.torch import load_file

    extra = {"mode": "lora", "lora": {"r": 2, "init": "fila"}} if mode == "lora-fila" else {}

    def weights(tag, seed):
        cfg = make_cfg(tiny_dir, tmp_path / tag, "grad_diff",
                       optim={"max_steps": 3, "batch_size": 2, "seed": seed}, **extra)
        return load_file(str(run_training(cfg, log=quiet) / "model.safetensors"))

    first, again, other = weights("a", 0), weights("b", 0), weights("c", 1)
    base = load_file(str(tiny_dir / "model.safetensors"))
    assert set(first) == set(again) == set(other)
    assert any(not torch.equal(first[k], base[k]) for k in first if k in base)  # it trained
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert any(not torch.equal(first[k], other[k]) for k in first)


# --- evaluation during training ---

@pytest.mark.parametrize("mode", ["full", "lora"])
def test_evaluation_every_n_steps_keeps_the_best_checkpoint(tuned_tiny, tmp_path, mode):
    """grad_diff from the fine-tuned tiny model, forget answer probability every 2 steps: each value
    logged, the lowest one's weights kept in <run>/best (merged for LoRA) and named in run.json."""
    from unlearnkit.data.sources import load_spec
    from unlearnkit.evaluation.probability import answer_probabilities, mean
    from unlearnkit.models.loading import load_model

    extra = {"mode": mode, "lora": {"r": 4}} if mode == "lora" else {}
    cfg = make_cfg(tuned_tiny, tmp_path / "run", "grad_diff", optim={"max_steps": 6, "lr": 3e-3},
                   eval={"every_steps": 2, "metric": "forget_prob", "examples": 4}, **extra)
    out = run_training(cfg, log=quiet)
    summary = json.loads((out / "run.json").read_text())["eval"]
    history = summary["history"]
    assert [step for step, _ in history] == [2, 4, 6] and logged(out, "eval_forget_prob") == [v for _, v in history]
    assert summary["mode"] == "min" and summary["best"]["value"] == min(v for _, v in history)
    assert summary["best"]["step"] == min(history, key=lambda sv: sv[1])[0]
    assert (out / "best" / "model.safetensors").is_file() and not list((out / "best").glob("adapter_*"))
    assert not list(tmp_path.glob("run.partial"))
    forget = load_spec(FORGET)[:4]
    again = mean(answer_probabilities(*load_model(str(out / "best")), forget, max_length=96))
    assert again == pytest.approx(summary["best"]["value"], rel=1e-4)


def test_evaluation_ratio_is_maximised_and_can_skip_keeping(tuned_tiny, tmp_path):
    cfg = make_cfg(tuned_tiny, tmp_path / "run", "grad_diff", optim={"max_steps": 2},
                   eval={"every_steps": 1, "metric": "retain_over_forget", "keep_best": False})
    out = run_training(cfg, log=quiet)
    summary = json.loads((out / "run.json").read_text())["eval"]
    assert summary["mode"] == "max" and summary["best"] is None and len(summary["history"]) == 2
    assert all(v > 0 for _, v in summary["history"]) and not (out / "best").exists()


def test_evaluation_config_refuses_what_it_cannot_do(tiny_dir, tmp_path):
    from unlearnkit.config import ConfigError, dump_config

    assert "\neval:" not in dump_config(make_cfg(tiny_dir, tmp_path / "r", "ihl"))  # absent: hashes unchanged
    for evaluation, message in [
        ({"every": 2}, r"unknown key\(s\) \['every'\]; valid keys are \['every_steps', 'examples', 'keep_best', 'metric', 'mode'\]"),
        ({"metric": "accuracy"}, r"unknown metric 'accuracy'; valid metrics: \['forget_prob', 'retain_over_forget', 'retain_prob'\]"),
        ({"mode": "best"}, r"eval.mode: 'best' is not one of"),
        ({"every_steps": 0}, "every_steps must be >= 1"),
    ]:
        with pytest.raises(ConfigError, match=message):
            make_cfg(tiny_dir, tmp_path / "r", "ihl", eval=evaluation)
    with pytest.raises(ConfigError, match="retain_prob needs data.retain"):
        make_cfg(tiny_dir, tmp_path / "r", "finetune", eval={"metric": "retain_prob"})
