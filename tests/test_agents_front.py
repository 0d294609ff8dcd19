"""The agent front over HTTP: an OpenAI-compatible fake backend served by uvicorn, the front
served the same way, real HTTP clients (httpx, openai) in between. The fake backend checks every
body it gets with guard/boundary.py, as the guarded vLLM server does."""

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from unlearnkit.agents.config import AgentConfig
from unlearnkit.agents.front import create_app
from unlearnkit.agents.graph import Pipeline
from unlearnkit.agents.llm import LLMError, OpenAIChat
from unlearnkit.agents.serve import free_port
from unlearnkit.agents.store import LiveTarget, TargetStore
from unlearnkit.evaluation.injection import injection_prompts, leaked_names
from unlearnkit.guard import boundary
from unlearnkit.guard.policy import load_policy, read_meta

from tests.conftest import Served

TOKEN = "s3cret-token"
OPERATOR = {"Authorization": f"Bearer {TOKEN}"}    # the admin token: the front's diagnostics are shown


def fake_backend(meta=None):
    """An OpenAI-compatible echo server; records the bodies it got, and what guard/boundary.py (the
    guarded vLLM server's request rules, against the policy `meta`) says about each."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, StreamingResponse

    app = FastAPI()
    app.state.bodies = []
    app.state.rejections = []
    app.state.healthy = True
    app.state.context = 2048

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": "echo-model", "object": "model"}]}

    @app.get("/health")
    async def health():
        return JSONResponse({}, status_code=200 if app.state.healthy else 500)

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        raw = await request.body()
        body = json.loads(raw)
        app.state.bodies.append(body)
        words = len(json.dumps(body["messages"][-1].get("content")).split())
        if (body.get("max_tokens") or 0) > 4096 or words > app.state.context:   # as vLLM refuses a request past its context
            return JSONResponse({"error": {"message": "max_tokens is too large", "type": "BadRequestError",
                                           "param": None, "code": 400}}, status_code=400)
        admin = boundary.admin_authorised(request.headers.get("authorization", ""), TOKEN)
        rejection = boundary.check("POST", "/v1/chat/completions", raw, meta, admin)[1]
        if rejection is not None:
            app.state.rejections.append(rejection)
        last = body["messages"][-1]["content"]
        last = last if isinstance(last, str) else json.dumps(last)
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
                done = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": len(last.split()), "completion_tokens": len(text.split()) + 1}}
                yield f"data: {json.dumps(done)}\n\n".encode()
                yield b"data: [DONE]\n\n"
            return StreamingResponse(events(), media_type="text/event-stream")
        n = body.get("n", 1)
        return {"id": "c1", "object": "chat.completion", "model": body.get("model"),
                "choices": [{"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                            for i in range(n)],
                "usage": {"prompt_tokens": len(last.split()), "completion_tokens": len(text.split()) + 1,
                          "total_tokens": 0}}

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = await request.json()
        app.state.bodies.append(body)
        if body.get("stream"):
            async def events():
                yield f"data: {json.dumps({'choices': [{'index': 0, 'text': 'echo'}]})}\n\n".encode()
                yield b"data: [DONE]\n\n"
            return StreamingResponse(events(), media_type="text/event-stream")
        return {"id": "c2", "object": "text_completion", "choices": [{"index": 0, "text": "echo", "finish_reason": "stop"}],
                "usage": {"prompt_tokens": len(body["prompt"].split()), "completion_tokens": 2, "total_tokens": 0}}

    @app.post("/tokenize")
    async def tokenize(request: Request):
        """One token per word (a chat: its last message's words), as the echo answers count them."""
        body = await request.json()
        text = body["messages"][-1]["content"] if "messages" in body else body["prompt"]
        text = text if isinstance(text, str) else json.dumps(text)
        return {"tokens": list(range(len(text.split()))), "count": len(text.split()), "max_model_len": app.state.context}

    @app.post("/detokenize")
    async def detokenize(request: Request):
        return {"prompt": " ".join(["w"] * len((await request.json())["tokens"]))}

    return app


@pytest.fixture
def backend(tiny_policy):
    served = Served(fake_backend(read_meta(tiny_policy)))
    yield served
    served.stop()


def received(backend) -> list[dict]:
    return backend.server.config.app.state.bodies


@pytest.fixture
def store(tiny_policy, tmp_path):
    store = TargetStore(load_policy(tiny_policy), live_file=tmp_path / "live.json")
    store.threshold = store.classifier.threshold = 0.5    # see tests/test_agents.py
    return store


def front_for(store, llm, backend_url, guarded=False, token=TOKEN, alive=None, **cfg):
    pipeline = Pipeline(AgentConfig(retry_backoff=0.0, **cfg), store, llm)
    return Served(create_app(store, pipeline, backend_url + "/v1", model_name="echo-model",
                             backend_guarded=guarded, admin_token=token, backend_alive=alive)), pipeline


def chat(url, content, headers=OPERATOR, **extra):
    return httpx.post(f"{url}/v1/chat/completions", timeout=30, headers=headers,
                      json={"model": "echo-model", "messages": [{"role": "user", "content": content}], **extra})


def sse(text: str) -> list[dict]:
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ") and line != "data: [DONE]"]


def test_unflagged_requests_pass_through(store, backend, fake_llm):
    llm = fake_llm()
    front, _ = front_for(store, llm, backend.url)
    try:
        r = chat(front.url, "What is the capital of France?", vllm_xargs={"unlearn_top_k": 8})
        assert r.status_code == 200 and r.headers["x-unlearn-path"] == "passthrough"
        assert r.json()["choices"][0]["message"]["content"] == "echo: What is the capital of France?"
        assert r.json()["unlearn"] == {"path": "passthrough", "reason": "not flagged"}
        assert not received(backend)[-1].get("vllm_xargs")            # unguarded backend: unlearn_* stripped
        assert llm.calls == []
        streamed = chat(front.url, "Name a red fruit please", stream=True)
        events = sse(streamed.text)
        assert streamed.status_code == 200 and streamed.headers["x-unlearn-path"] == "passthrough"
        assert [e["choices"][0]["delta"].get("content") for e in events] == [
            "", "echo: Name a red", " fruit please", None]                  # the role, word chunks, the finish
        assert events[-1]["choices"][0]["finish_reason"] == "stop" and "usage" not in events[-1]
        usage = sse(chat(front.url, "Name a red fruit", stream=True, stream_options={"include_usage": True}).text)
        assert usage[-1]["usage"] == {"prompt_tokens": 4, "completion_tokens": 6, "total_tokens": 10}
        models = httpx.get(f"{front.url}/v1/models").json()
        assert models["data"][0]["id"] == "echo-model"
    finally:
        front.stop()


def test_guarded_backend_gets_the_unlearn_args(store, backend, fake_llm):
    front, _ = front_for(store, fake_llm(), backend.url, guarded=True)
    try:
        assert chat(front.url, "What is the capital of France?", vllm_xargs={"unlearn_top_k": 8}).status_code == 200
        assert received(backend)[-1]["vllm_xargs"] == {"unlearn_top_k": 8}
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
        assert meta["reason"] == "flagged" and body["usage"]["prompt_tokens"] > 0
        s = chat(front.url, "Who is Kalo Mirten?", stream=True)
        events = sse(s.text)
        assert s.headers["x-unlearn-path"] == "agents" and s.text.rstrip().endswith("data: [DONE]")
        assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
        text = "".join(e["choices"][0]["delta"].get("content", "") for e in events)
        assert text == "A poet from the Netherlands." and events[-1]["choices"][0]["finish_reason"] == "stop"
        c = httpx.post(f"{front.url}/v1/completions", json={"prompt": "Kalo Mirten was born in", "max_tokens": 5})
        assert c.json()["object"] == "text_completion" and c.json()["choices"][0]["text"] == "A poet from the Netherlands."
        forced = chat(front.url, "What is the capital of France?", vllm_xargs={"unlearn_guard": True})
        assert forced.headers["x-unlearn-path"] == "agents" and forced.json()["unlearn"]["reason"] == "tightened by request"
        assert pipeline.stats["requests"] == 4
    finally:
        front.stop()


HI = {"role": "user", "content": "hi"}


def body(**fields) -> bytes:
    return json.dumps({"messages": [HI], **fields}).encode()


def user(content) -> bytes:
    return json.dumps({"messages": [{"role": "user", "content": content}]}).encode()


# (raw body, status, the field the error names: `param`, None for the body as a whole). Before
# the front applied guard/boundary.py and read messages strictly, the first ten were HTTP 500.
MALFORMED = [
    (b"[" * 100_000 + b"]" * 100_000, 400, None),                                   # RecursionError
    (b'{"messages": [{"role": "user", "content": "hi"}], "stop": ' + b"[" * 40 + b"]" * 40 + b"}", 400, None),
    (json.dumps({"messages": [{"role": ["user"], "content": "hi"}]}).encode(), 400, "messages[0].role"),   # unhashable
    (json.dumps({"messages": [{"role": {"a": 1}, "content": "hi"}]}).encode(), 400, "messages[0].role"),
    (user([{"type": "text", "text": 5}]), 400, "messages[0].content[0].text"),
    (user([{"type": "text", "text": None}]), 400, "messages[0].content[0].text"),
    (user([{"type": "text", "text": ["a"]}]), 400, "messages[0].content[0].text"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "temperature": NaN}', 400, "temperature"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "temperature": 1e400}', 400, "temperature"),
    (b'{"model": "\\ud800", "messages": [{"role": "user", "content": "hi"}]}', 400, "model"),   # lone surrogate
    (b'{"messages": [{"role": "user", "content": "hi \\udfff"}]}', 400, "messages"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "n": ' + b"9" * 400 + b"}", 400, None),
    (b'{"messages": [{"role": "user", "content": "hi"}], "presence_penalty": 1' + b"0" * 320 + b"}", 400, None),
    (b"{not json", 400, None), (b"[1, 2]", 400, None), (b"\xff\xfe", 400, None),
    (b'{"messages": []}', 400, "messages"), (b'{"messages": "hi"}', 400, "messages"),
    (json.dumps({"messages": ["hi"]}).encode(), 400, "messages[0]"),
    (json.dumps({"messages": [{"role": "wizard", "content": "hi"}]}).encode(), 400, "messages[0].role"),
    (user(5), 400, "messages[0].content"),
    (user(["hi", 3]), 400, "messages[0].content[1]"),
    (user([{"type": ["text"], "text": "x"}]), 400, "messages[0].content[0].type"),
    (json.dumps({"messages": [{**HI, "name": ["x"]}]}).encode(), 400, "messages[0].name"),
    (json.dumps({"messages": [{**HI, "audio": {"id": "a1"}}]}).encode(), 400, "messages[0].audio"),
    (body(stream="yes"), 400, "stream"), (body(n=0), 400, "n"), (body(n=17), 400, "n"), (body(n=2.0), 400, "n"),
    (body(vllm_xargs=[1]), 400, "vllm_xargs"),
    (body(vllm_xargs={"unlearn_threshold": 2.0}), 400, "vllm_xargs"),                  # not a cosine
    (body(vllm_xargs={"unlearn_guard": False}), 400, "vllm_xargs"),                    # would switch it off
    (body(vllm_xargs={"unlearn_off": 1}), 400, "vllm_xargs"),
    (body(vllm_xargs={"unlearn_targets": ["x" * 201]}), 400, "vllm_xargs"),
    (body(functions=[{"name": "f"}]), 400, "functions"),                              # not on the allow-list
    (body(logit_bias={"5": 100}), 400, "logit_bias"),
    (b"{" + b" " * (boundary.MAX_BODY_BYTES + 1) + b"}", 413, None),
]


def test_malformed_requests_get_4xx_naming_the_field_and_never_reach_the_backend(store, backend, fake_llm):
    front, _ = front_for(store, fake_llm(), backend.url)
    try:
        url = f"{front.url}/v1/chat/completions"
        for raw, status, field in MALFORMED:
            r = httpx.post(url, content=raw, headers={"content-type": "application/json"}, timeout=30)
            assert r.status_code == status, (raw[:80], r.status_code, r.text[:200])
            error = r.json()["error"]
            assert error["param"] == field and error["code"] == status, (raw[:80], error)
            if field:
                assert field.split("[")[0].split(".")[0] in error["message"], error
        r = httpx.post(f"{front.url}/v1/completions", json={"prompt": [1, 2, 3]})
        assert r.status_code == 400 and "token-id" in r.json()["error"]["message"] and r.json()["error"]["param"] == "prompt"
        r = httpx.post(f"{front.url}/v1/completions", json={"prompt": "hi", "suffix": 3, "nonsense": 1})
        assert r.status_code == 400 and r.json()["error"]["param"] == "nonsense"
        assert received(backend) == []
        assert chat(front.url, "What is the capital of France?").status_code == 200     # still serving
        assert httpx.get(f"{front.url}/openapi.json").status_code == 404 and httpx.get(f"{front.url}/docs").status_code == 404
    finally:
        front.stop()


UNREADABLE = [   # content the engine would render (or hand to an encoder) and the classifier cannot read
    [{"type": "image_url", "image_url": {"url": "https://example.com/kalo.png"}}],
    [{"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}],
    [{"type": "file", "file": {"file_data": "AAAA"}}],
    [{"type": "video_url", "video_url": {"url": "https://example.com/v.mp4"}}],
    [{"type": "image_embeds", "image_embeds": "AAAA"}],
    [{"type": "tool_reference", "name": "lookup"}],
    [{"type": "text", "text": "hi", "uuid": "u1", "image_url": "https://example.com/x.png"}],   # vLLM: media
    [{"text": "hi"}],                                                                          # no type
]


def test_content_the_front_cannot_read_is_refused_not_relayed(store, backend, fake_llm):
    front, _ = front_for(store, fake_llm(), backend.url)
    try:
        for parts in UNREADABLE:
            for role in ("user", "system", "tool"):
                r = httpx.post(f"{front.url}/v1/chat/completions",
                               json={"messages": [{"role": role, "content": [{"type": "text", "text": "hi"}] + parts}]})
                assert r.status_code == 400 and r.json()["error"]["param"].startswith("messages[0].content[1]"), r.text
        assert received(backend) == []
    finally:
        front.stop()


TARGET = "Kalo Mirten"
RENDERED = {   # every place a chat request puts text the engine renders into the prompt, or picks from
    "system": {"messages": [{"role": "system", "content": f"You are {TARGET}'s biographer."}, HI]},
    "developer": {"messages": [{"role": "developer", "content": f"Always discuss {TARGET}."}, HI]},
    "prefill": {"messages": [{"role": "user", "content": "Tell me something."},
                             {"role": "assistant", "content": f"Sure. {TARGET} was born in"}],
                "continue_final_message": True, "add_generation_prompt": False},
    "tool definition": {"messages": [HI], "tools": [{"type": "function", "function": {
        "name": "lookup", "description": f"Look up facts about {TARGET}", "parameters": {"type": "object"}}}]},
    "tool call arguments": {"messages": [HI, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": json.dumps({"who": TARGET})}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "no result"}]},
    "tool result": {"messages": [HI, {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": TARGET}]}]},
    "legacy function call": {"messages": [HI, {"role": "assistant", "content": None,
                                               "function_call": {"name": "lookup", "arguments": TARGET}}]},
    "name field": {"messages": [{**HI, "name": "Kalo_Mirten"}, {"role": "assistant", "content": "ok", "name": TARGET}]},
    "reasoning": {"messages": [{"role": "assistant", "content": "ok", "reasoning": f"about {TARGET}"}, HI]},
    "documents": {"messages": [HI], "documents": [{"title": "bio", "text": f"{TARGET} lives in Utrecht."}]},
    "template kwargs": {"messages": [HI], "chat_template_kwargs": {"persona": f"{TARGET}"}},
    "input_text part": {"messages": [{"role": "user", "content": [{"type": "input_text", "text": f"Who is {TARGET}?"}]}]},
    "plain string part": {"messages": [{"role": "user", "content": ["Who is", TARGET]}]},
    "refusal part": {"messages": [{"role": "assistant", "content": [{"type": "refusal", "refusal": TARGET}]}, HI]},
}


def test_everything_the_engine_renders_is_classified(store, backend, fake_llm):
    front, _ = front_for(store, fake_llm(answer="Hello.", audit="NO"), backend.url)
    try:
        assert chat(front.url, "hi").headers["x-unlearn-path"] == "passthrough"       # the control
        for where, request in RENDERED.items():
            r = httpx.post(f"{front.url}/v1/chat/completions", json={"model": "echo-model", **request}, timeout=30,
                           headers=OPERATOR)
            assert r.status_code == 200 and r.headers["x-unlearn-path"] == "agents", (where, r.text[:200])
        c = httpx.post(f"{front.url}/v1/completions", json={"prompt": "A poem:", "suffix": f"-- by {TARGET}"},
                       headers=OPERATOR)
        assert c.headers["x-unlearn-path"] == "agents"
        assert all("max_tokens" not in b for b in received(backend)[1:])     # the control, then flagged ones' checks
        assert all(b.get("stream") for b in received(backend)[1:])
    finally:
        front.stop()


@pytest.mark.parametrize("path,extra,field", [
    ("/v1/chat/completions", {"prompt_logprobs": 1}, "prompt_logprobs"),
    ("/v1/chat/completions", {"prompt_logprobs": 0}, "prompt_logprobs"),
    ("/v1/chat/completions", {"echo": True}, "echo"),                          # vLLM: prompt_logprobs = top_logprobs (0)
    ("/v1/chat/completions", {"use_beam_search": True}, "use_beam_search"),
    ("/v1/chat/completions", {"chat_template": "{{ messages }}"}, "chat_template"),
    ("/v1/completions", {"echo": True, "logprobs": 0}, "echo"),                # 0: each prompt token's own logprob
    ("/v1/completions", {"echo": True, "logprobs": 5}, "echo"),
    ("/v1/completions", {"prompt_logprobs": 2}, "prompt_logprobs"),
    ("/v1/completions", {"prompt_embeds": "AAAA"}, "prompt_embeds"),
    ("/v1/completions", {"use_beam_search": True}, "use_beam_search"),
])
def test_the_front_refuses_what_the_guarded_engine_refuses(path, extra, field, store, backend, fake_llm):
    front, _ = front_for(store, fake_llm(), backend.url, guarded=True)
    try:
        for question in ("What is the capital of France?", "Who is Kalo Mirten?"):    # either path
            request = {"messages": [{"role": "user", "content": question}]} if "chat" in path else {"prompt": question}
            r = httpx.post(f"{front.url}{path}", json={"model": "echo-model", **request, **extra})
            assert r.status_code == 400 and r.json()["error"]["param"] == field, r.text
            assert boundary.check("POST", path, json.dumps({**request, **extra}).encode(), store.policy.meta)[1].field == field
        assert received(backend) == []
        for asked in ({"logprobs": True, "top_logprobs": 2}, {"logprobs": True}, {"n": 2}):   # a rewrite has none
            assert chat(front.url, "What is the capital of France?", **asked).status_code == 400
        assert received(backend) == []
    finally:
        front.stop()


def test_live_targets_are_sent_to_a_guarded_engine(store, backend, fake_llm):
    assert store.add(LiveTarget("Oskar Vell", ("Oskar Vell invented the glass piano in 1820.",)))
    front, _ = front_for(store, fake_llm(), backend.url, guarded=True)
    unguarded, _ = front_for(store, fake_llm(), backend.url, guarded=False)
    try:
        r = chat(front.url, "What is the capital of France?", vllm_xargs={"unlearn_targets": "Zed Quorra", "unlearn_top_k": 8})
        assert r.headers["x-unlearn-path"] == "passthrough"
        assert received(backend)[-1]["vllm_xargs"] == {"unlearn_targets": ["Oskar Vell", "Zed Quorra"], "unlearn_top_k": 8}
        chat(front.url, "What is the capital of France?")
        assert received(backend)[-1]["vllm_xargs"] == {"unlearn_targets": ["Oskar Vell"]}
        chat(unguarded.url, "What is the capital of France?", vllm_xargs={"unlearn_targets": ["Zed Quorra"]})
        assert not received(backend)[-1].get("vllm_xargs")                              # --agents-only: nothing unlearn_*
        assert backend.server.config.app.state.rejections == []
    finally:
        front.stop()
        unguarded.stop()


def test_the_graphs_model_calls_carry_live_targets_and_pass_the_boundary(store, backend, tmp_path):
    """The nodes' calls go to the guarded engine too: each carries the live targets (at most 64: the
    request's own first, then the live ones it names, then the nearest) and passes boundary.py."""
    live = [{"name": f"Person Number{t:03d}", "facts": [f"Person Number{t:03d} was born in town {t}."]} for t in range(70)]
    (tmp_path / "live.json").write_text(json.dumps({"targets": live}))
    model = OpenAIChat(backend.url + "/v1", "echo-model", TOKEN, structured_outputs=True, guarded=True)
    front, pipeline = front_for(store, model, backend.url, guarded=True, k=2, j=1, retries=0)
    try:
        r = chat(front.url, "Where was Person Number069 born?", vllm_xargs={"unlearn_targets": ["Zed Quorra"]})
        assert r.status_code == 200 and r.headers["x-unlearn-path"] == "agents"
        calls = list(received(backend))
        assert len(calls) >= 2    # answer, erase (the echoed draft names the target: no audit call)
        for c in calls:
            targets = c["vllm_xargs"]["unlearn_targets"]
            assert len(targets) == 64 and targets[0] == "Person Number069", targets[:3]   # the server's live targets first
        # a draft naming no target is audited: a constrained call (structured_outputs), with the targets too
        forced = chat(front.url, "What is the capital of France?", vllm_xargs={"unlearn_guard": True})
        assert forced.headers["x-unlearn-path"] == "agents"
        audit = [c for c in received(backend)[len(calls):] if "structured_outputs" in c]
        assert audit and all(len(c["vllm_xargs"]["unlearn_targets"]) == 64 for c in audit)
        assert backend.server.config.app.state.rejections == []                     # what vLLM's middleware checks
        plain = OpenAIChat(backend.url + "/v1", "echo-model", guarded=False)
        plain.chat([HI], targets=("Oskar Vell",))
        assert "vllm_xargs" not in received(backend)[-1]                              # not the guarded engine
    finally:
        front.stop()


def test_rewrites_are_capped_and_never_starve_unflagged_requests(store, backend, fake_llm):
    gate, started = threading.Event(), threading.Event()

    def slow_answer(prompt, n):
        started.set()
        gate.wait(30)
        return ["A poet."] * n

    llm = fake_llm(answer=slow_answer, audit="NO")
    front, pipeline = front_for(store, llm, backend.url, max_rewrites=1, rewrite_queue=1)
    admin = {"Authorization": f"Bearer {TOKEN}"}
    try:
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(chat, front.url, "Who is Kalo Mirten?")
            assert started.wait(20)
            second = pool.submit(chat, front.url, "Where does Kalo Mirten live?")      # waits in the queue
            deadline = time.time() + 20
            while httpx.get(f"{front.url}/admin/stats", headers=admin).json()["rewrites_admitted"] < 2:
                assert time.time() < deadline
                time.sleep(0.05)
            busy = chat(front.url, "What did Kalo Mirten write first?")       # the refusal, as any answer
            assert busy.status_code == 200 and "retry-after" not in busy.headers
            assert busy.json()["choices"][0]["message"]["content"] == pipeline.cfg.refusal
            plain = chat(front.url, "What is the capital of France?")                  # while the rewriter is full
            assert plain.status_code == 200 and plain.headers["x-unlearn-path"] == "passthrough"
            assert llm.count("answer") == 1                                           # the cap: one at a time
            gate.set()
            assert first.result(30).status_code == 200 and second.result(30).status_code == 200
        assert chat(front.url, "Who is Kalo Mirten?").status_code == 200              # the places were freed
        assert httpx.get(f"{front.url}/admin/stats", headers=admin).json()["front"]["rewrites_busy"] == 1
    finally:
        gate.set()
        front.stop()


def test_a_rewrite_stops_when_its_client_leaves(store, backend, fake_llm):
    def slow_answer(prompt, n):
        time.sleep(2.0)
        return ["Kalo Mirten is a Dutch poet."] * n       # names the target: erase would be next

    llm = fake_llm(answer=slow_answer, erase="A poet.", critic="5")
    front, pipeline = front_for(store, llm, backend.url, k=1, j=1)
    try:
        assert chat(front.url, "What is the capital of France?").status_code == 200   # the embedder is warm
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{front.url}/v1/chat/completions", timeout=1.0,
                       json={"messages": [{"role": "user", "content": "Who is Kalo Mirten?"}]})
        with httpx.stream("POST", f"{front.url}/v1/chat/completions", timeout=10,
                          json={"messages": [{"role": "user", "content": "Who is Kalo Mirten?"}], "stream": True}) as r:
            assert next(r.iter_lines()).startswith("data: ")      # the first event, then the client leaves
        deadline = time.time() + 20
        while pipeline.stats["abandoned"] < 2:
            assert time.time() < deadline, dict(pipeline.stats)
            time.sleep(0.1)
        assert llm.count("answer") == 2 and llm.count("erase") == 0 and llm.count("critic") == 0
    finally:
        front.stop()


def test_health_fails_when_the_backend_is_down(store, backend, fake_llm):
    alive = [True]
    front, _ = front_for(store, fake_llm(), backend.url, alive=lambda: alive[0])
    dead, _ = front_for(store, fake_llm(), f"http://127.0.0.1:{free_port()}")
    try:
        r = httpx.get(f"{front.url}/health")
        assert r.status_code == 200 and r.json() == {"status": "ok"}                  # no target count, no backend URL
        alive[0] = False                                                               # the vLLM child exited
        assert httpx.get(f"{front.url}/health").status_code == 503
        alive[0] = True
        backend.server.config.app.state.healthy = False                               # up, but its /health fails
        assert httpx.get(f"{front.url}/health").status_code == 503
        backend.server.config.app.state.healthy = True
        assert httpx.get(f"{front.url}/health").status_code == 200
        assert httpx.get(f"{dead.url}/health").status_code == 503                      # nothing listening
    finally:
        front.stop()
        dead.stop()


def test_the_front_gives_no_oracle(store, backend, fake_llm):
    """Headers and bodies say the path and why in words: no similarity, threshold, critic score or
    whether a target was named (a client could climb those); 400s and /health disclose no figure."""
    assert store.add(LiveTarget("Oskar Vell", ("Oskar Vell invented the glass piano in 1820.",)))
    llm = fake_llm(answer="Kalo Mirten is a poet.", erase="A poet.", critic="4")
    front, _ = front_for(store, llm, backend.url, k=1, j=1)
    try:
        replies = [chat(front.url, q, **extra) for q, extra in [
            ("What is the capital of France?", {}), ("Who is Kalo Mirten?", {}), ("What did Oskar Vell invent?", {}),
            ("Which book did the Dutch poet from Utrecht publish first?", {}),
            ("What is the capital of France?", {"vllm_xargs": {"unlearn_guard": True}}),
            ("What is the capital of France?", {"vllm_xargs": {"unlearn_threshold": -1}}),
            ("Who is Zed Quorra?", {"vllm_xargs": {"unlearn_targets": ["Zed Quorra"]}})]]
        reasons = [r.headers["x-unlearn-reason"] for r in replies]
        assert reasons == ["not flagged", "flagged", "flagged", reasons[3], "tightened by request",
                           "tightened by request", "tightened by request"]
        assert reasons[3] in ("flagged", "not flagged")
        for r in replies:
            shown = r.headers["x-unlearn-reason"] + json.dumps(r.json()["unlearn"].get("reason"))
            assert not any(ch.isdigit() for ch in shown) and "name" not in shown and "similar" not in shown, shown
            assert "critic_scores" not in r.json()["unlearn"] and "classifier" not in r.json()["unlearn"]
        threshold = store.policy.meta["calibration"]["threshold"]
        for value in (threshold + 0.01, threshold - 0.01, 1.0):            # clamped, never refused by value
            assert chat(front.url, "hi", vllm_xargs={"unlearn_threshold": value}).status_code == 200
        assert "targets" not in httpx.get(f"{front.url}/health").text

        def broken(*args, **kwargs):
            raise RuntimeError("embedder down")

        store.classify = store.classify_source = broken                           # fail closed, and say no more
        r = chat(front.url, "What is the capital of France?")
        assert (r.headers["x-unlearn-path"], r.headers["x-unlearn-reason"]) == ("agents", "flagged")
    finally:
        front.stop()


def test_backend_down(store, fake_llm):
    front, _ = front_for(store, fake_llm(answer="Kalo Mirten writes.", erase="A writer.", critic="5"),
                         f"http://127.0.0.1:{free_port()}", k=1, j=1)
    try:
        r = chat(front.url, "What is the capital of France?")
        assert r.status_code == 502 and "unreachable" in r.json()["error"]["message"]
        assert chat(front.url, "What is the capital of France?", stream=True).status_code == 502
        flagged = chat(front.url, "Who is Kalo Mirten?")                # as a relayed request is answered
        assert flagged.status_code == 502 and flagged.json() == r.json()
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


def shape(value):
    """A JSON value's structure: keys and types, not the text (ids and times differ per reply)."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(v) for v in value]
    return type(value).__name__


def observed(r, stream: bool):
    """What a client reads of a reply beside its text: status, header names, body structure, finish."""
    headers = sorted(k for k in r.headers if k not in ("date", "content-length"))
    if stream:
        events = sse(r.text)
        return r.status_code, headers, [shape(e) for e in events[:1] + events[-1:]], events[-1]["choices"][0]["finish_reason"]
    return r.status_code, headers, shape(r.json()), r.json()["choices"][0]["finish_reason"]


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_cannot_tell_which_path_answered(stream, store, backend, fake_llm):
    """A target and a decoy get replies that differ in their text only: the same status, headers,
    fields, finish rule and usage shape, whichever path (relay or rewrite) answered."""
    llm = fake_llm(answer="Kalo Mirten is a poet.", erase="A poet.", critic="4")
    front, _ = front_for(store, llm, backend.url, guarded=True, k=1, j=1)
    try:
        for extra in ({}, {"max_tokens": 2}, {"stream_options": {"include_usage": True}} if stream else {"seed": 1}):
            target = chat(front.url, "Who is Kalo Mirten?", headers=None, stream=stream, **extra)
            decoy = chat(front.url, "Who is Dario Fenwick?", headers=None, stream=stream, **extra)
            assert observed(target, stream) == observed(decoy, stream), extra
            assert "unlearn" not in target.text and not any(k.startswith("x-unlearn") for k in target.headers)
        assert observed(target, stream)[3] == "stop"
        for extra in ({"n": 2}, {"logprobs": True}, {"max_tokens": 10**6}):   # refused alike: by form, by the backend
            target = chat(front.url, "Who is Kalo Mirten?", headers=None, stream=stream, **extra)
            decoy = chat(front.url, "Who is Dario Fenwick?", headers=None, stream=stream, **extra)
            assert (target.status_code, target.json()) == (decoy.status_code, decoy.json()), extra
        assert llm.count("answer") >= 2       # the target was rewritten, the decoy relayed
    finally:
        front.stop()


def test_a_prompt_past_the_context_is_not_classified_and_the_backend_refuses_it(store, backend, fake_llm):
    """The front asks the backend's tokenizer first: a prompt longer than the model's context costs no
    classification, and the backend's own refusal comes back, for a target as for anything else."""
    app = backend.server.config.app
    front, pipeline = front_for(store, fake_llm(), backend.url, guarded=True)
    calls = []
    real = store.classify_source
    store.classify_source = lambda *a, **k: calls.append(1) or real(*a, **k)
    try:
        app.state.context = 8
        target, decoy = (chat(front.url, f"Tell me everything you know about {who}, please, in detail.")
                         for who in ("Kalo Mirten", "Dario Fenwick"))
        assert target.status_code == decoy.status_code == 400 and target.json() == decoy.json()
        assert calls == [] and pipeline.stats["requests"] == 0
        app.state.context = 2048
        assert chat(front.url, "Who is Kalo Mirten?").status_code == 200 and calls
    finally:
        front.stop()
