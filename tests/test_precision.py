"""`optim.precision: auto`: the faster precision, measured once per machine and cached; cache hashes."""

import json

import pytest

from unlearnkit.config import ConfigError, from_dict, load_config, to_dict
from unlearnkit.files import json_digest
from unlearnkit.models import precision as P
from unlearnkit.training.config import TrainConfig

DATA = {"forget": "synth/forget?people=4&forget=1", "retain": "synth/retain?people=4&forget=1"}


def test_the_faster_of_two_timings_is_chosen():
    assert P.choose({"fp32": 0.010, "bf16": 0.004}) == "bf16"
    assert P.choose({"fp32": 0.004, "bf16": 0.010}) == "fp32"
    # bf16 must win clearly: a 5% gain is noise and fp32's exact numerics are kept
    assert P.choose({"fp32": 0.0100, "bf16": 0.0095}) == "fp32"
    with pytest.raises(ValueError, match=r"timings for \['bf16'\] are missing"):
        P.choose({"fp32": 1.0})


@pytest.fixture
def no_cuda(monkeypatch):
    """The CPU path of `auto` (on a CUDA machine it answers bf16 without measuring)."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_measurement_is_cached_per_machine_and_logged(tmp_path, monkeypatch, no_cuda):
    monkeypatch.setattr(P, "_MEMO", {})
    calls, lines = [], []

    def measure():
        calls.append(1)
        return {"fp32": 0.008, "bf16": 0.002}

    first = P.auto_precision(tmp_path, measure=measure, log=lines.append)
    assert first.precision == "bf16" and len(calls) == 1
    assert any("bf16" in line and "GFLOP/s" in line for line in lines)
    (cached,) = tmp_path.glob("*.json")
    saved = json.loads(cached.read_text())
    assert saved["precision"] == "bf16" and saved["seconds"] == {"fp32": 0.008, "bf16": 0.002}
    assert saved["machine"] == P.cpu_model() and saved["gflops"]["bf16"] == pytest.approx(4 * saved["gflops"]["fp32"], rel=0.01)

    monkeypatch.setattr(P, "_MEMO", {})  # a new process: the file answers, nothing is measured
    again = P.auto_precision(tmp_path, measure=measure, log=lines.append)
    assert again.precision == "bf16" and len(calls) == 1

    monkeypatch.setattr(P, "machine_key", lambda: ("Other CPU (family 1 model 1)", "9.9"))
    monkeypatch.setattr(P, "_MEMO", {})
    P.auto_precision(tmp_path, measure=lambda: {"fp32": 0.001, "bf16": 0.1}, log=lines.append)
    assert len(list(tmp_path.glob("*.json"))) == 2  # another CPU model / torch version: its own answer


def test_a_broken_cache_file_is_refused_with_the_remedy(tmp_path, monkeypatch, no_cuda):
    monkeypatch.setattr(P, "_MEMO", {})
    P.auto_precision(tmp_path, measure=lambda: {"fp32": 1.0, "bf16": 2.0}, log=lambda *_: None)
    (cached,) = tmp_path.glob("*.json")
    cached.write_text(json.dumps({**json.loads(cached.read_text()), "precision": "fp16"}))
    monkeypatch.setattr(P, "_MEMO", {})
    with pytest.raises(ConfigError, match=r"'fp16' is not one of \['bf16', 'fp32'\]; delete the file"):
        P.auto_precision(tmp_path)


def test_cuda_stays_bf16_without_measuring(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    choice = P.auto_precision(tmp_path, measure=lambda: pytest.fail("measured on CUDA"))
    assert choice.precision == "bf16" and not list(tmp_path.iterdir())


def test_the_benchmark_times_both_precisions():
    seconds = P.time_linear(shape=(32, 64, 64), repeats=2)
    assert set(seconds) == {"fp32", "bf16"} and all(0 < s < 5 for s in seconds.values())


def test_a_bad_precision_is_refused_naming_the_valid_ones():
    with pytest.raises(ConfigError, match=r"optim.precision: 'fp16' is not one of \['auto', 'bf16', 'fp32'\]"):
        from_dict(TrainConfig, {"data": DATA, "optim": {"precision": "fp16"}})
    with pytest.raises(ConfigError, match=r"'fp16' is not a precision; valid: \['auto', 'bf16', 'fp32'\]"):
        P.resolve_precision("fp16")


def _legacy_hash(cfg):
    """The run hash as computed before `auto` was measured: the literal precision (no base model here)."""
    import dataclasses

    return json_digest(to_dict(dataclasses.replace(cfg, output_dir="")), length=12)


@pytest.mark.parametrize("legacy,measured", [("fp32", "fp32"), ("fp32", "bf16"), ("bf16", "bf16"), ("bf16", "fp32")])
def test_run_hashes_follow_the_precision_used_and_keep_old_caches(monkeypatch, legacy, measured):
    """A config that said `auto` and now says `fp32` keeps its cached run exactly when that run was
    fp32 (auto meant fp32 on this machine); two configs share a hash only if they train alike, and
    an explicit bf16 keeps its old hash."""
    from unlearnkit.training.cache import config_hash

    monkeypatch.setattr(P, "legacy_auto", lambda: legacy)
    monkeypatch.setattr(P, "auto_precision", lambda **_: P.PrecisionChoice(measured, "injected"))

    def cfg(precision):
        return from_dict(TrainConfig, {"model": "smollm2", "data": DATA, "optim": {"precision": precision}})

    hashes = {p: config_hash(cfg(p)) for p in P.PRECISIONS}
    old_auto_run = _legacy_hash(cfg("auto"))       # made with `legacy` precision
    used = {"auto": measured, "bf16": "bf16", "fp32": "fp32"}
    for a in P.PRECISIONS:
        for b in P.PRECISIONS:
            assert hashes[a] != hashes[b] or used[a] == used[b], (a, b)
    if measured != legacy:
        assert hashes["auto"] == hashes[measured]    # auto is hashed as what it resolves to
    assert (hashes["fp32"] == old_auto_run) == (legacy == "fp32")   # pinning fp32 keeps an fp32 cache only
    assert (hashes["auto"] == old_auto_run) == (measured == legacy)
    assert hashes["bf16"] == _legacy_hash(cfg("bf16")) and hashes["fp32"] != hashes["bf16"]


def test_shipped_cpu_configs_pin_their_precision():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "configs"
    for path in [*root.glob("train/*.yaml"), *root.glob("finetune/synth_*.yaml"), *root.glob("gpu/*.yaml")]:
        if "optim" in path.read_text():
            assert load_config(TrainConfig, path).optim.precision != "auto", path
