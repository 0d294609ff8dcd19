"""The agent front's verdict endpoint for gateways (POST /v1/unlearn/verdict), and the LiteLLM
guardrail over it (agents/gateways.py; only where litellm is installed)."""

import asyncio
import json
import os

import httpx
import pytest
from fastapi.testclient import TestClient

from unlearnkit.agents.config import AgentConfig
from unlearnkit.agents.front import create_app
from unlearnkit.agents.graph import Pipeline
from unlearnkit.agents.store import LiveTarget, TargetStore
from unlearnkit.guard.boundary import MAX_BODY_BYTES
from unlearnkit.guard.policy import load_policy

TOKEN = "verdict-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
NOWHERE = "http://127.0.0.1:9/v1"      # the verdict never calls the backend: any call would fail


@pytest.fixture
def store(tiny_policy, tmp_path):
    store = TargetStore(load_policy(tiny_policy), live_file=tmp_path / "live.json")
    store.threshold = store.classifier.threshold = 0.5    # see tests/test_agents.py
    assert store.add(LiveTarget("Oskar Vell", ("Oskar Vell invented the glass piano in 1820.",)))
    return store


def app_for(store, llm, token=TOKEN):
    return create_app(store, Pipeline(AgentConfig(), store, llm), NOWHERE, model_name="m",
                      backend_guarded=True, admin_token=token)


def ask(content, **extra):
    return {"model": "m", "messages": [{"role": "user", "content": content}], **extra}


def test_verdicts_say_flagged_category_and_path_and_nothing_else(store, fake_llm):
    llm = fake_llm()
    cases = [
        (ask("What is the capital of France?"), False, None),
        (ask("Who is Kalo Mirten?"), True, "policy"),
        ({"model": "m", "prompt": "Tell me about Kalo Mirten."}, True, "policy"),            # a completions request
        (ask("What did Oskar Vell invent?"), True, "live"),
        (ask("Who is Zed Quorra?", vllm_xargs={"unlearn_targets": ["Zed Quorra"]}), True, "request"),
        (ask("What is the capital of France?", vllm_xargs={"unlearn_guard": True}), True, "request"),
        ({"model": "m", "messages": [{"role": "system", "content": "Kalo Mirten lives in Utrecht."},
                                     {"role": "user", "content": "Summarise the above."}]}, True, "policy"),
    ]
    with TestClient(app_for(store, llm)) as client:
        for body, flagged, category in cases:
            r = client.post("/v1/unlearn/verdict", headers=ADMIN, json=body)
            assert r.status_code == 200, r.text
            assert r.json() == {"flagged": flagged, "category": category,
                                "path": "agents" if flagged else "passthrough"}, body
            assert not any(word in r.text for word in ("Kalo", "Mirten", "Vell", "Zed", "score", "threshold"))
            assert not any(ch.isdigit() for ch in r.text)
        stats = client.get("/admin/stats", headers=ADMIN).json()["front"]
    assert stats["verdicts_flagged"] == 6 and stats["verdicts_passed"] == 1
    assert llm.calls == []                                  # a verdict runs no rewrite and calls no model


def test_verdict_needs_the_admin_token(store, fake_llm):
    body = ask("Who is Kalo Mirten?")
    with TestClient(app_for(store, fake_llm())) as client:
        assert client.post("/v1/unlearn/verdict", json=body).status_code == 401
        assert client.post("/v1/unlearn/verdict", json=body, headers={"Authorization": "Bearer nope"}).status_code == 401
    with TestClient(app_for(store, fake_llm(), token=None)) as client:      # no $UNLEARN_ADMIN_TOKEN: disabled
        r = client.post("/v1/unlearn/verdict", json=body, headers=ADMIN)
        assert r.status_code == 403 and "UNLEARN_ADMIN_TOKEN" in r.text


@pytest.mark.parametrize("raw, status, field", [
    (b"not json", 400, None),
    (b"[1, 2]", 400, None),
    (json.dumps({"model": "m"}).encode(), 400, "messages"),                                       # neither
    (json.dumps({"model": "m", "prompt": "x", "messages": []}).encode(), 400, "messages"),        # both
    (json.dumps(ask("hi", colour="red")).encode(), 400, "colour"),                                # unknown field
    (json.dumps(ask("hi", prompt_logprobs=1)).encode(), 400, "prompt_logprobs"),                  # a channel
    (json.dumps(ask("hi", vllm_xargs={"unlearn_threshold": 1.5})).encode(), 400, "vllm_xargs"),   # not a cosine
    (json.dumps({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.com/kalo.png"}}]}]}).encode(), 400,
     "messages[0].content[0].type"),
    (b"{" + b" " * MAX_BODY_BYTES + b"}", 413, None),
])
def test_malformed_verdict_requests_are_4xx_naming_the_problem(store, fake_llm, raw, status, field):
    with TestClient(app_for(store, fake_llm())) as client:
        r = client.post("/v1/unlearn/verdict", headers={**ADMIN, "content-type": "application/json"}, content=raw)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["message"] and (field is None or error["param"] == field), error


# ----------------------------------------------------------------------------- LiteLLM
def guardrail(app, **kwargs):
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")    # no network fetch on import
    pytest.importorskip("litellm")
    from unlearnkit.agents.gateways import UnlearnGuardrail

    return UnlearnGuardrail(api_base="http://front/v1", transport=httpx.ASGITransport(app=app),
                            guardrail_name="unlearn", event_hook="pre_call", **{"default_on": True, **kwargs})


def run_hook(rail, data, call_type="acompletion"):
    return asyncio.run(rail.async_pre_call_hook(None, None, data, call_type))


def test_litellm_guardrail_blocks_flagged_calls(store, fake_llm):
    from fastapi import HTTPException

    app = app_for(store, fake_llm())
    rail = guardrail(app, api_key=TOKEN)
    gateway_keys = {"metadata": {"user_api_key": "sk-1"}, "litellm_call_id": "c1", "proxy_server_request": {}}
    plain = {**ask("What is the capital of France?"), **gateway_keys}
    assert run_hook(rail, plain) is plain                                       # passes, unchanged
    for data, call_type in [({**ask("What did Oskar Vell invent?"), **gateway_keys}, "acompletion"),
                            ({"model": "m", "prompt": "Who is Kalo Mirten?", **gateway_keys}, "text_completion")]:
        with pytest.raises(HTTPException) as blocked:
            run_hook(rail, data, call_type)
        assert blocked.value.status_code == 400 and "Vell" not in json.dumps(blocked.value.detail)
    with pytest.raises(HTTPException) as bad:                                   # the front's 400, its reason
        run_hook(rail, ask("hi", prompt_logprobs=1))
    assert bad.value.status_code == 400 and "prompt_logprobs" in bad.value.detail
    assert run_hook(rail, {"model": "m", "input": "Kalo Mirten"}, "aembedding") is not None   # not classified

    # fail closed without a verdict (wrong token), open only when asked
    with pytest.raises(HTTPException) as closed:
        run_hook(guardrail(app, api_key="wrong"), plain)
    assert closed.value.status_code == 503
    assert run_hook(guardrail(app, api_key="wrong", fail_open=True), plain) is plain
    # not default_on and not requested in the call's metadata: LiteLLM's rule says it does not run
    assert run_hook(guardrail(app, api_key="wrong", default_on=False), plain) is plain


def test_litellm_loads_the_guardrail_from_its_config_path(tmp_path):
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    pytest.importorskip("litellm")
    from litellm.proxy.types_utils.utils import get_instance_fn

    from unlearnkit.agents.gateways import UnlearnGuardrail

    cls = get_instance_fn("unlearnkit.agents.gateways.UnlearnGuardrail", config_file_path=str(tmp_path / "config.yaml"))
    assert cls is UnlearnGuardrail
    with pytest.raises(ValueError, match="api_base"):
        cls(guardrail_name="unlearn", event_hook="pre_call")
