"""Replicas that agree: two agent fronts (in-process apps under uvicorn, as in test_agents_front.py)
over one fake OpenAI backend, sharing one live targets file. A target added on A's admin API is
enforced by B (and sent to B's guarded engine) from B's next request, survives B's restart, and a
replica that cannot read the file refuses flagged requests and says so on /health."""

import json
import os
import threading
import time

import httpx
import pytest

from unlearnkit.agents.config import AgentConfig
from unlearnkit.agents.front import create_app
from unlearnkit.agents.graph import Pipeline
from unlearnkit.agents.store import LiveTarget, StoreUnavailable, TargetStore, write_durable
from unlearnkit.guard.policy import load_policy

from tests.conftest import Served

TOKEN = "replica-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
QUESTION = "What did Oskar Vell invent?"
PLAIN = "What is the capital of France?"


def echo_backend():
    """An OpenAI chat echo server that records the bodies it got (what a guarded engine is sent)."""
    from fastapi import FastAPI, Request

    app = FastAPI()
    app.state.bodies = []

    @app.get("/health")
    async def health():
        return {}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        app.state.bodies.append(body)
        text = f"echo: {body['messages'][-1]['content']}"
        return {"id": "c1", "object": "chat.completion", "model": body.get("model"),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}

    return app


@pytest.fixture
def backend():
    served = Served(echo_backend())
    yield served
    served.stop()


def replica_store(tiny_policy, path, **kw) -> TargetStore:
    """One replica's store: its own policy copy, the shared live targets file."""
    store = TargetStore(load_policy(tiny_policy), live_file=path, **kw)
    store.threshold = store.classifier.threshold = 0.5    # see tests/test_agents.py
    return store


def front(store, llm, backend) -> Served:
    pipeline = Pipeline(AgentConfig(retry_backoff=0.0, k=1, j=1), store, llm)
    return Served(create_app(store, pipeline, backend.url + "/v1", model_name="echo-model",
                             backend_guarded=True, admin_token=TOKEN))


def chat(url, content):
    """A request with the admin token: the front's diagnostics say which path it took."""
    return httpx.post(f"{url}/v1/chat/completions", timeout=30, headers=ADMIN,
                      json={"model": "echo-model", "messages": [{"role": "user", "content": content}]})


def path_of(url, content) -> str:
    r = chat(url, content)
    return r.headers.get("x-unlearn-path", str(r.status_code))


def engine_targets(backend) -> list:
    return backend.server.config.app.state.bodies[-1].get("vllm_xargs", {}).get("unlearn_targets", [])


def until(condition, timeout: float) -> float:
    """Seconds until `condition()` holds (polled every 5 ms); fails after `timeout`."""
    start = time.perf_counter()
    while not condition():
        assert time.perf_counter() - start < timeout, "not within the bound"
        time.sleep(0.005)
    return time.perf_counter() - start


def test_a_target_added_on_one_replica_is_enforced_by_the_other(tiny_policy, tmp_path, backend, fake_llm):
    shared = tmp_path / "shared" / "live.json"
    llm = fake_llm(answer="Oskar Vell invented the glass piano.", erase="Someone invented an instrument.")
    a = front(replica_store(tiny_policy, shared), llm, backend)
    b_store = replica_store(tiny_policy, shared)
    b = front(b_store, llm, backend)
    try:
        assert path_of(b.url, QUESTION) == "passthrough"
        r = httpx.post(f"{a.url}/admin/targets", headers=ADMIN,
                       json={"name": "Oskar Vell", "facts": ["Oskar Vell invented the glass piano in 1820."]})
        assert r.status_code == 201
        tries = []
        n = until(lambda: tries.append(1) or path_of(b.url, QUESTION) == "agents", timeout=5.0)
        # a replace always changes the file's inode, so B's very next request sees the change
        assert len(tries) == 1
        print(f"\nreplica B enforced A's new live target on its first request after A's 201: {n * 1000:.0f} ms "
              "(that request: stat, re-read, embed the new target, classify, rewrite)")
        reply = chat(b.url, QUESTION).json()
        assert "Vell" not in reply["choices"][0]["message"]["content"]
        assert chat(b.url, PLAIN).headers["x-unlearn-path"] == "passthrough"
        assert engine_targets(backend) == ["Oskar Vell"]                    # B's engine's token filter sees it
        assert httpx.get(f"{b.url}/admin/targets", headers=ADMIN).json()["live_version"] == 1
        # and back: removed on B, no longer enforced on A
        assert httpx.delete(f"{b.url}/admin/targets/Oskar Vell", headers=ADMIN).status_code == 200
        until(lambda: path_of(a.url, QUESTION) == "passthrough", timeout=5.0)
        assert chat(a.url, PLAIN).status_code == 200 and engine_targets(backend) == []
        httpx.post(f"{a.url}/admin/targets", headers=ADMIN, json={"name": "Maren Dulcet"})
    finally:
        a.stop()
        b.stop()
    # B restarts (a new process would build the same store from the file): the target is there
    restarted = front(replica_store(tiny_policy, shared), llm, backend)
    try:
        assert path_of(restarted.url, "Where was Maren Dulcet born?") == "agents"
        assert [t["name"] for t in json.loads(shared.read_text())["targets"]] == ["Maren Dulcet"]
    finally:
        restarted.stop()


def test_a_change_the_stat_cannot_see_is_read_within_recheck_s(tiny_policy, tmp_path):
    """A file system whose stat does not change (coarse timestamps, attribute caching): the bytes
    are read again at least every `recheck_s` seconds."""
    shared = tmp_path / "live.json"
    a = replica_store(tiny_policy, shared)
    b = replica_store(tiny_policy, shared, recheck_s=0.3)
    b._file_stamp = lambda: (1, 1, 1, 1)      # every stat looks the same
    b.refresh()
    assert a.add(LiveTarget("Oskar Vell"))
    added = time.perf_counter()
    b.refresh()
    assert not b.classify(QUESTION, [QUESTION]).flagged               # the stat said nothing changed

    def enforced():
        b.refresh()
        return b.classify(QUESTION, [QUESTION]).flagged
    until(enforced, timeout=2.0)
    waited = time.perf_counter() - added
    print(f"\nwith an unchanging stat, B saw the change after {waited:.2f} s (recheck_s 0.3)")
    assert waited <= 0.3 + 0.2


def test_concurrent_changes_on_two_replicas_are_all_kept(tiny_policy, tmp_path):
    """Each change is made on the file as it is under the lock: none overwrites another's."""
    shared = tmp_path / "live.json"
    stores = [replica_store(tiny_policy, shared), replica_store(tiny_policy, shared)]

    def add_many(store, side):
        for n in range(8):
            assert store.add(LiveTarget(f"Person {side}{n} Halloran"))

    threads = [threading.Thread(target=add_many, args=(s, side)) for s, side in zip(stores, "AB")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    saved = json.loads(shared.read_text())
    assert saved["version"] == 16 and len(saved["targets"]) == 16
    for store in stores:
        store.refresh()
        assert len(store.live_targets()) == 16
    assert not [p for p in shared.parent.iterdir() if p.name.endswith(".tmp")]   # no temporary file left


def test_a_crash_before_the_rename_leaves_the_old_file(tiny_policy, tmp_path, monkeypatch):
    shared = tmp_path / "live.json"
    store = replica_store(tiny_policy, shared)
    assert store.add(LiveTarget("Oskar Vell"))
    before = shared.read_bytes()

    def crash(*_):
        raise OSError("power lost")
    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="power lost"):
        store.add(LiveTarget("Maren Dulcet"))
    monkeypatch.undo()
    assert shared.read_bytes() == before and json.loads(before)["version"] == 1
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert replica_store(tiny_policy, shared).live_targets() == (LiveTarget("Oskar Vell"),)


@pytest.mark.parametrize("breakage", ["gone", "malformed", "unreadable"])
def test_a_replica_that_cannot_read_the_store_refuses_flagged_requests(tiny_policy, tmp_path, backend, fake_llm,
                                                                        breakage):
    shared = tmp_path / "live.json"
    a_store = replica_store(tiny_policy, shared)
    assert a_store.add(LiveTarget("Oskar Vell"))
    b = front(replica_store(tiny_policy, shared), fake_llm(), backend)
    verdict = f"{b.url}/v1/unlearn/verdict"
    good = shared.read_bytes()
    try:
        assert httpx.get(f"{b.url}/health").json() == {"status": "ok"}
        assert path_of(b.url, QUESTION) == "agents"
        if breakage == "gone":
            shared.unlink()
        elif breakage == "malformed":
            shared.write_text('{"targets": [{"name": "Oskar Vell"')
        else:
            shared.unlink()
            shared.mkdir()                       # reading it fails with an OSError (IsADirectoryError)
        r = chat(b.url, QUESTION)                # flagged (the live target in force): refused, not rewritten
        refusal = b.server.config.app.state.front.pipeline.cfg.refusal
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == refusal
        again = chat(b.url, "Tell me about Kalo Mirten.")                           # a policy target too
        assert again.status_code == 200 and again.json()["choices"][0]["message"]["content"] == refusal
        plain = chat(b.url, PLAIN)
        assert plain.status_code == 200 and engine_targets(backend) == ["Oskar Vell"]   # the targets in force stay
        health = httpx.get(f"{b.url}/health")
        assert health.status_code == 503 and health.json()["status"] == "degraded"
        assert httpx.post(verdict, headers=ADMIN, json={"messages": [{"role": "user", "content": QUESTION}]}).status_code == 503
        assert httpx.post(f"{b.url}/admin/targets", headers=ADMIN, json={"name": "Maren Dulcet"}).status_code == 503
        stats = httpx.get(f"{b.url}/admin/stats", headers=ADMIN).json()
        assert stats["front"]["store_refusals"] == 3 and stats["live_targets_degraded"]
        with pytest.raises(StoreUnavailable):
            a_store.add(LiveTarget("Maren Dulcet"))                 # never a change on a stale copy
        if shared.is_dir():
            shared.rmdir()
        write_durable(shared, json.loads(good))                      # the operator restores the file
        until(lambda: httpx.get(f"{b.url}/health").status_code == 200, timeout=5.0)
        assert path_of(b.url, QUESTION) == "agents"
    finally:
        b.stop()
