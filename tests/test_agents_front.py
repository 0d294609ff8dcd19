"""The agent front over HTTP: an OpenAI-compatible fake backend served by uvicorn, the front
served the same way, real HTTP clients (httpx, openai) in between."""

import json
import threading
import time

import httpx
import pytest

from unlearnkit.agents.config import AgentConfig
from unlearnkit.agents.front import create_app
from unlearnkit.agents.graph import Pipeline
from unlearnkit.agents.llm import LLMError, OpenAIChat
from unlearnkit.agents.serve import free_port
from unlearnkit.agents.store import TargetStore
from unlearnkit.evaluation.injection import injection_prompts, leaked_names
from unlearnkit.guard.policy import load_policy

TOKEN = "s3cret-token"


class Served:
    """A FastAPI app under uvicorn in a thread, on a free loopback port."""

    def __init__(self, app):
        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started:
            assert time.time() < deadline, "server did not start"
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self):
        self.server.should_exit = True
        self.thread.join(10)


def fake_backend():
    """An OpenAI-compatible echo server; records the bodies it got."""
    from fastapi import FastAPI, Request
    from fastapi.responses import StreamingResponse

    app = FastAPI()
    app.state.bodies = []

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": "echo-model", "object": "model"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        app.state.bodies.append(body)
        last = body["messages"][-1]["content"]
        if "Rate how well" in last:
            text = "4"
        elif "check answers" in last:
            text = "YES"
        else:
            text = f"echo: {last}"
        if body.get("stream"):
            async def events():
                for n, word in enumerate(text.split(" ")):
                    delta = {"content": (" " if n else "") + word}
                    yield f"data: {json.dumps({'choices': [{'index': 0, 'delta': delta}]})}\n\n".encode()
                yield b"data: [DONE]\n\n"
            return StreamingResponse(events(), media_type="text/event-stream")
        n = body.get("n", 1)
        return {"id": "c1", "object": "chat.completion", "model": body.get("model"),
                "choices": [{"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                            for i in range(n)],
                "usage": {"prompt_tokens": len(last.split()), "completion_tokens": len(text.split()), "total_tokens": 0}}

    return app


@pytest.fixture
def backend():
    served = Served(fake_backend())
    yield served
    served.stop()


@pytest.fixture
def store(tiny_policy, tmp_path):
    store = TargetStore(load_policy(tiny_policy), live_file=tmp_path / "live.json")
    store.threshold = store.classifier.threshold = 0.5    # see tests/test_agents.py
    return store


def front_for(store, llm, backend_url, guarded=False, token=TOKEN, **cfg):
    pipeline = Pipeline(AgentConfig(retry_backoff=0.0, **cfg), store, llm)
    return Served(create_app(store, pipeline, backend_url + "/v1", model_name="echo-model",
                             backend_guarded=guarded, admin_token=token)), pipeline


def chat(url, content, **extra):
    return httpx.post(f"{url}/v1/chat/completions", timeout=30,
                      json={"model": "echo-model", "messages": [{"role": "user", "content": content}], **extra})


def sse(text: str) -> list[dict]:
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ") and line != "data: [DONE]"]


def test_unflagged_requests_pass_through(store, backend, fake_llm):
    llm = fake_llm()
    front, _ = front_for(store, llm, backend.url)
    try:
        r = chat(front.url, "What is the capital of France?", vllm_xargs={"unlearn_top_k": 8, "other": 1})
        assert r.status_code == 200 and r.headers["x-unlearn-path"] == "passthrough"
        assert r.json()["choices"][0]["message"]["content"] == "echo: What is the capital of France?"
        assert r.json()["unlearn"]["path"] == "passthrough" and "similarity" in r.json()["unlearn"]["reason"]
        assert backend.server.config.app.state.bodies[-1]["vllm_xargs"] == {"other": 1}   # unguarded backend
        assert llm.calls == []
        direct = httpx.post(f"{backend.url}/v1/chat/completions", json={
            "messages": [{"role": "user", "content": "Name a red fruit please"}], "stream": True}).content
        streamed = chat(front.url, "Name a red fruit please", stream=True)
        assert streamed.status_code == 200 and streamed.content == direct         # byte for byte
        assert streamed.headers["x-unlearn-path"] == "passthrough"
        models = httpx.get(f"{front.url}/v1/models").json()
        assert models["data"][0]["id"] == "echo-model"
    finally:
        front.stop()


def test_guarded_backend_gets_the_unlearn_args(store, backend, fake_llm):
    front, _ = front_for(store, fake_llm(), backend.url, guarded=True)
    try:
        assert chat(front.url, "What is the capital of France?", vllm_xargs={"unlearn_top_k": 8}).status_code == 200
        assert backend.server.config.app.state.bodies[-1]["vllm_xargs"] == {"unlearn_top_k": 8}
    finally:
        front.stop()


def test_flagged_requests_run_the_graph(store, backend, fake_llm):
    llm = fake_llm(answer="Kalo Mirten is a Dutch poet from Utrecht.", erase="A Dutch poet.", critic="5",
                   compose="A poet from the Netherlands.")
    front, pipeline = front_for(store, llm, backend.url, k=2, j=2)
    try:
        r = chat(front.url, "Who is Kalo Mirten?")
        body = r.json()
        assert r.status_code == 200 and r.headers["x-unlearn-path"] == "agents" and r.headers["x-unlearn-route"] == "rewritten"
        assert body["choices"][0]["message"]["content"] == "A poet from the Netherlands."
        meta = body["unlearn"]
        assert meta["path"] == "agents" and meta["route"] == "rewritten" and meta["llm_calls"] == 5
        assert meta["classifier"] == "the prompt names a forget target" and body["usage"]["prompt_tokens"] > 0
        s = chat(front.url, "Who is Kalo Mirten?", stream=True, n=2)
        events = sse(s.text)
        assert s.headers["x-unlearn-path"] == "agents" and s.text.rstrip().endswith("data: [DONE]")
        assert events[0]["choices"][0]["delta"] == {"role": "assistant"} and len(events[0]["choices"]) == 2
        text = "".join(e["choices"][0]["delta"].get("content", "") for e in events)
        assert text == "A poet from the Netherlands." and events[-1]["unlearn"]["route"] == "rewritten"
        c = httpx.post(f"{front.url}/v1/completions", json={"prompt": "Kalo Mirten was born in", "max_tokens": 5})
        assert c.json()["object"] == "text_completion" and c.json()["choices"][0]["text"] == "A poet from the Netherlands."
        forced = chat(front.url, "What is the capital of France?", vllm_xargs={"unlearn_guard": True})
        assert forced.headers["x-unlearn-path"] == "agents" and forced.json()["unlearn"]["classifier"] == "unlearn_guard requested"
        assert pipeline.stats["requests"] == 4
    finally:
        front.stop()


def test_bad_requests_get_400_and_the_front_keeps_serving(store, backend, fake_llm):
    front, _ = front_for(store, fake_llm(), backend.url)
    try:
        url = f"{front.url}/v1/chat/completions"
        cases = [(b"{not json", "not valid JSON"), (b"[1, 2]", "JSON object"), (b'{"messages": []}', "non-empty list"),
                 (b'{"messages": [{"role": "wizard", "content": "hi"}]}', "'role'"),
                 (b'{"messages": [{"role": "user", "content": 5}]}', "content"),
                 (b'{"messages": [{"role": "user", "content": "hi"}], "stream": "yes"}', "'stream'"),
                 (b'{"messages": [{"role": "user", "content": "hi"}], "n": 0}', "'n'"),
                 (b'{"messages": [{"role": "user", "content": "hi"}], "vllm_xargs": {"unlearn_threshold": 0.99}}', "loosen"),
                 (b'{"messages": [{"role": "user", "content": "hi"}], "vllm_xargs": {"unlearn_guard": false}}', "switch"),
                 (b'{"messages": [{"role": "user", "content": "hi"}], "vllm_xargs": {"unlearn_off": 1}}', "unknown")]
        for raw, message in cases:
            r = httpx.post(url, content=raw, headers={"content-type": "application/json"})
            assert r.status_code == 400 and message in r.json()["error"]["message"], (raw, r.text)
        r = httpx.post(f"{front.url}/v1/completions", json={"prompt": [1, 2, 3]})
        assert r.status_code == 400 and "token-id" in r.json()["error"]["message"]
        assert chat(front.url, "What is the capital of France?").status_code == 200
    finally:
        front.stop()


def test_backend_down(store, fake_llm):
    front, _ = front_for(store, fake_llm(answer="Kalo Mirten writes.", erase="A writer.", critic="5"),
                         f"http://127.0.0.1:{free_port()}", k=1, j=1)
    try:
        r = chat(front.url, "What is the capital of France?")
        assert r.status_code == 502 and "unreachable" in r.json()["error"]["message"]
        assert chat(front.url, "What is the capital of France?", stream=True).status_code == 502
        assert chat(front.url, "Who is Kalo Mirten?").json()["unlearn"]["route"] == "rewritten"   # nodes use their own model
    finally:
        front.stop()


def test_admin_endpoint_changes_targets_live(store, backend, fake_llm, tmp_path):
    llm = fake_llm(answer="Oskar Vell invented the glass piano.", erase="Someone invented an instrument.", critic="5")
    front, pipeline = front_for(store, llm, backend.url, k=1, j=1)
    admin = {"Authorization": f"Bearer {TOKEN}"}
    try:
        q = "What did Oskar Vell invent?"
        assert chat(front.url, q).headers["x-unlearn-path"] == "passthrough"
        assert httpx.post(f"{front.url}/admin/targets", json={"name": "Oskar Vell"}).status_code == 401
        assert httpx.post(f"{front.url}/admin/targets", json={"name": "Oskar Vell"},
                          headers={"Authorization": "Bearer wrong"}).status_code == 401
        r = httpx.post(f"{front.url}/admin/targets", headers=admin,
                       json={"name": "Oskar Vell", "facts": ["Oskar Vell invented the glass piano in 1820."]})
        assert r.status_code == 201
        r = chat(front.url, q)          # the next request, no restart
        assert r.headers["x-unlearn-path"] == "agents" and "Vell" not in r.json()["choices"][0]["message"]["content"]
        assert "Vell" not in r.headers["x-unlearn-reason"] and "Oskar" not in json.dumps(r.json()["unlearn"])
        listed = httpx.get(f"{front.url}/admin/targets", headers=admin).json()
        assert listed["live"][0]["name"] == "Oskar Vell" and "Kalo Mirten" in listed["policy"]
        assert httpx.post(f"{front.url}/admin/targets", headers=admin, json={"name": 3}).status_code == 400
        assert httpx.post(f"{front.url}/admin/targets", headers=admin, json={"name": "Kalo Mirten"}).status_code == 409
        assert httpx.delete(f"{front.url}/admin/targets/Kalo Mirten", headers=admin).status_code == 409
        assert httpx.delete(f"{front.url}/admin/targets/Oskar Vell", headers=admin).status_code == 200
        assert httpx.delete(f"{front.url}/admin/targets/Oskar Vell", headers=admin).status_code == 404
        assert chat(front.url, q).headers["x-unlearn-path"] == "passthrough"
        # the watched file: an edit applies to the next request too
        (tmp_path / "live.json").write_text(json.dumps({"targets": [{"name": "Oskar Vell"}]}))
        assert chat(front.url, q).headers["x-unlearn-path"] == "agents"
        stats = httpx.get(f"{front.url}/admin/stats", headers=admin).json()
        assert stats["front"]["agents"] == 2 and stats["front"]["passthrough"] == 2 and stats["agents"]["route_rewritten"] == 2
    finally:
        front.stop()
    closed, _ = front_for(store, llm, backend.url, token=None)
    try:
        r = httpx.get(f"{closed.url}/admin/targets", headers=admin)
        assert r.status_code == 403 and "UNLEARN_ADMIN_TOKEN" in r.json()["error"]["message"]
    finally:
        closed.stop()


def test_prompt_injection_never_reveals_targets(store, backend, fake_llm):
    """A fully compromised model: every node obeys the injection and prints all it was given."""
    echo = lambda prompt, n: [prompt] * n   # noqa: E731
    llm = fake_llm(answer=echo, audit="NO", erase=echo, critic="5", compose=echo)
    front, _ = front_for(store, llm, backend.url, k=2, j=2)
    targets = store.policy.targets
    try:
        prompts = injection_prompts([store.policy.items[0]["question"], store.policy.items[3]["question"]])
        replies = [chat(front.url, p).json() for _, p in prompts]
        leaks = [(p, leaked_names(r["choices"][0]["message"]["content"] + json.dumps(r["unlearn"]), targets))
                 for (_, p), r in zip(prompts, replies)]
        assert len(prompts) == 8 + 12 and all(not names for _, names in leaks), leaks
        assert sum(r["unlearn"]["path"] == "agents" for r in replies) >= 12
    finally:
        front.stop()


def test_openai_chat_client(backend):
    llm = OpenAIChat(backend.url + "/v1")
    reply = llm.chat([{"role": "user", "content": "hello there"}], n=2)
    assert llm.model == "echo-model" and reply.texts == ["echo: hello there"] * 2 and reply.prompt_tokens == 2
    bodies = backend.server.config.app.state.bodies
    assert "structured_outputs" not in bodies[-1]
    OpenAIChat(backend.url + "/v1", structured_outputs=True).chat([{"role": "user", "content": "x"}], choices=["YES", "NO"])
    assert bodies[-1]["structured_outputs"] == {"choice": ["YES", "NO"]}
    with pytest.raises(LLMError, match="APIConnectionError"):
        OpenAIChat(f"http://127.0.0.1:{free_port()}/v1", "m", timeout=2).chat([{"role": "user", "content": "x"}])
