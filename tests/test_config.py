"""Strict YAML configs: unknown keys, wrong types, overrides, cross-field rules."""

from pathlib import Path

import pytest

from unlearnkit.config import ConfigError, dump_config, load_config
from unlearnkit.training.config import TrainConfig

BASE = """
model: smollm2
method: {name: ihl}
data: {forget: synth/forget, retain: synth/retain}
"""


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_valid_config_and_overrides(tmp_path):
    cfg = load_config(TrainConfig, write(tmp_path, BASE), ["optim.lr=3e-4", "mode=lora", "lora.r=4", "lora.init=fila"])
    assert cfg.optim.lr == 3e-4 and cfg.lora.r == 4 and cfg.lora.init == "fila"
    # the dump re-loads to the same config
    again = load_config(TrainConfig, write(tmp_path, dump_config(cfg)))
    assert again == cfg


@pytest.mark.parametrize("extra, message", [
    ("optim: {learning_rate: 1e-4}", "unknown key.*learning_rate.*valid keys"),
    ("colour: red", "unknown key.*colour"),
    ("optim: {epochs: many}", "optim.epochs.*expected a number"),
    ("mode: half", "mode.*not one of"),
    ("lora: {r: 8}", "LoRA options.*mode=full"),
])
def test_malformed_configs_name_the_problem(tmp_path, extra, message):
    with pytest.raises(ConfigError, match=message):
        load_config(TrainConfig, write(tmp_path, BASE + extra + "\n"))


def test_unknown_method_lists_valid_ones(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown method 'forgetify'.*ihl.*undial"):
        load_config(TrainConfig, write(tmp_path, BASE), ["method.name=forgetify"])


def test_lora_override_on_full_mode_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="mode=full"):
        load_config(TrainConfig, write(tmp_path, BASE), ["lora.r=16"])


@pytest.mark.parametrize("overrides, message", [
    (["method.name=finetune"], "finetune needs data.train"),
    (["data.retain=null"], "needs data.retain"),
    (["data.forget=null"], "needs data.forget"),
    (["method.beta=0"], "beta must be > 0"),
])
def test_cross_field_rules(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(TrainConfig, write(tmp_path, BASE), overrides)


def test_fila_needs_retain(tmp_path):
    text = "method: {name: undial}\ndata: {forget: synth/forget}\nmode: lora\nlora: {init: fila}\n"
    with pytest.raises(ConfigError, match="fila needs data.retain"):
        load_config(TrainConfig, write(tmp_path, text))


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(TrainConfig, tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(TrainConfig, write(tmp_path, "model: [unclosed"))
    with pytest.raises(ConfigError, match="key=value"):
        load_config(TrainConfig, write(tmp_path, BASE), ["optim.lr"])


CONFIGS = __import__("pathlib").Path(__file__).parents[1] / "configs"


def _is_eval(p) -> bool:
    return p.parent.name == "eval" or p.name.endswith("_eval.yaml")


@pytest.mark.parametrize("path", sorted(p for p in CONFIGS.glob("**/*.yaml")
                                        if p.parent.name not in ("guard", "agents", "compare", "accelerate") and not _is_eval(p)))
def test_shipped_configs_load(path):
    assert load_config(TrainConfig, path).method.name


EVAL_CONFIGS = sorted(p for p in CONFIGS.glob("**/*.yaml") if _is_eval(p))


def test_every_eval_config_is_found():
    names = {str(p.relative_to(CONFIGS)) for p in EVAL_CONFIGS}
    assert {"gpu/tofu_eval.yaml", "eval/tofu_mini.yaml", "eval/synth.yaml", "eval/tofu_forget10.yaml"} <= names


@pytest.mark.parametrize("path", EVAL_CONFIGS, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_shipped_eval_configs_load(path):
    """Every evaluation config (configs/eval/ and configs/gpu/*_eval.yaml) validates and names a known
    benchmark whose data loads."""
    from unlearnkit.evaluation.benchmarks import build_tasks
    from unlearnkit.evaluation.config import EvalConfig

    from unlearnkit.data.muse import muse_root

    cfg = load_config(EvalConfig, path)
    cfg.validate()
    assert cfg.metrics
    if cfg.benchmark.startswith("muse") and not Path(cfg.muse_dir or muse_root()).is_dir():
        pytest.skip(f"{cfg.benchmark} needs the MUSE-News directory ({cfg.muse_dir or muse_root()}), not on this machine")
    assert build_tasks(cfg)


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("agents/*.yaml")))
def test_shipped_agent_configs_load(path):
    from unlearnkit.agents.config import load_agent_config

    assert load_agent_config(str(path)).k >= 1


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("guard/*.yaml")))
def test_shipped_guard_configs_load(path):
    from unlearnkit.guard.policy import GuardConfig

    assert load_config(GuardConfig, path) == GuardConfig()   # the shipped default documents the defaults
