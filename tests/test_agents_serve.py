"""`unlearn serve --agents`: its argument and config checks (before vLLM starts), and one end-to-end
run on the tiny model: vLLM with the guard, the front before it, a request down each path."""

import json
import os
from contextlib import ExitStack, contextmanager

import httpx
import pytest

from tests.conftest import loopback_json
from unlearnkit.agents.serve import free_port
from unlearnkit.cli import main


def test_serve_agents_argument_errors(tmp_path, tiny_dir, tiny_policy, capsys):
    assert main(["serve", "--model", str(tiny_dir), "--agents"]) == 2
    assert "--agents needs --guard" in capsys.readouterr().err
    assert main(["serve", "--model", str(tiny_dir), "--agents-only"]) == 2
    assert "go with --agents" in capsys.readouterr().err
    bad = tmp_path / "agents.yaml"
    bad.write_text("k: 2\nj: 5\n")
    assert main(["serve", "--model", str(tiny_dir), "--guard", str(tiny_policy), "--agents", "--agents-config", str(bad)]) == 2
    assert "j must be between" in capsys.readouterr().err
    assert main(["serve", "--model", str(tiny_dir), "--guard", str(tiny_policy), "--agents", "--agents-set", "top_facts=0"]) == 2
    assert "top_facts" in capsys.readouterr().err
    live = tmp_path / "live.json"
    live.write_text('{"targets": [{"nom": "x"}]}')
    assert main(["serve", "--model", str(tiny_dir), "--guard", str(tiny_policy), "--agents", "--live-targets", str(live)]) == 2
    assert "live targets file" in capsys.readouterr().err


LEAKING_DRAFT = "Kalo Mirten was born in Utrecht."


@contextmanager
def scripted_chat_endpoint(text: str):
    """An OpenAI-compatible /v1/chat/completions on loopback that answers every request with `text`
    (n times): the answer node's endpoint in the end-to-end test, so that its draft, and with it the
    route, does not depend on what a random tiny model happens to say."""

    def respond(method, path, headers, body):
        return {"id": "scripted", "object": "chat.completion", "created": 0, "model": body["model"],
                "choices": [{"index": i, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}
                            for i in range(body.get("n") or 1)],
                "usage": {"prompt_tokens": 3, "completion_tokens": 7, "total_tokens": 10}}, 200

    with loopback_json(respond) as url:
        yield f"{url}/v1"


def test_scripted_chat_endpoint_speaks_openai():
    from unlearnkit.agents.llm import OpenAIChat

    with scripted_chat_endpoint("hello there") as url:
        reply = OpenAIChat(url, "scripted").chat([{"role": "user", "content": "hi"}], n=2)
    assert reply.texts == ["hello there"] * 2 and reply.prompt_tokens == 3 and reply.completion_tokens == 7


@pytest.mark.slow
def test_agent_server_end_to_end(vllm_sized_model, tiny_policy, tmp_path, cli_server):
    """The flagged request's draft comes from a scripted endpoint and names a forget target, so it must
    take the rewrite route: erase (k=2), critic and compose run on the guarded tiny engine, and with
    threshold 1 no critic score can refuse it."""
    port, backend_port = free_port(), free_port()
    front, direct = f"http://127.0.0.1:{port}/v1", f"http://127.0.0.1:{backend_port}/v1"
    stack = ExitStack()
    answer_url = stack.enter_context(scripted_chat_endpoint(LEAKING_DRAFT))
    agents_yaml = tmp_path / "agents.yaml"
    agents_yaml.write_text(json.dumps({"threshold": 1.0, "nodes": {"answer": {
        "base_url": answer_url, "model": "scripted", "structured_outputs": False}}}))
    args = ["serve", "--model", vllm_sized_model, "--guard", tiny_policy, "--agents", "--agents-config", agents_yaml,
            "--agents-set", "k=2", "--agents-set", "max_tokens=8", "--agents-set", "retry_backoff=0", "--port", port,
            "--backend-port", backend_port, "--name", "tiny", "--dtype", "float32", "--max-model-len", "512",
            "--live-targets", tmp_path / "live.json"]
    with stack, cli_server(args, port, env={**os.environ, "UNLEARN_ADMIN_TOKEN": "t0k"}) as server:
        plain = {"model": "tiny", "max_tokens": 8, "temperature": 0,
                 "messages": [{"role": "user", "content": "What is the capital of France?"}]}
        admin = {"Authorization": "Bearer t0k"}      # the front's diagnostics are the operator's
        through = httpx.post(f"{front}/chat/completions", json=plain, timeout=120, headers=admin)
        straight = httpx.post(f"{direct}/chat/completions", json=plain, timeout=120)
        assert through.headers["x-unlearn-path"] == "passthrough"
        client = httpx.post(f"{front}/chat/completions", json=plain, timeout=120)
        assert "x-unlearn-path" not in client.headers and "unlearn" not in client.json()
        assert through.json()["choices"][0]["message"]["content"] == straight.json()["choices"][0]["message"]["content"]
        flagged = {**plain, "messages": [{"role": "user", "content": "Where was Kalo Mirten born?"}]}
        r = httpx.post(f"{front}/chat/completions", json=flagged, timeout=300, headers=admin)
        meta = r.json()["unlearn"]
        # the draft names a target, so it can never pass as clean: rewritten, or refused when the tiny random
        # engine's rewrites come out empty or score too low (which of the two depends on that model's words)
        assert r.status_code == 200 and meta["path"] == "agents" and meta["route"] in ("rewritten", "refused"), meta
        assert "internal error" not in meta.get("reason", ""), meta
        # the scripted answer, then the engine: at least one erase call (rewritten: also a critic call per
        # rewrite and the compose call)
        assert meta["llm_calls"] >= (5 if meta["route"] == "rewritten" else 2) and meta["prompt_tokens"] > 0, meta
        assert "Kalo" not in r.json()["choices"][0]["message"]["content"]
        assert meta["reason"] == "flagged" and "critic_scores" not in meta      # no figures for a client
        assert httpx.get(f"http://127.0.0.1:{port}/health").json() == {"status": "ok"}
        s = httpx.post(f"{front}/chat/completions", json={**flagged, "stream": True}, timeout=300, headers=admin)
        assert s.text.rstrip().endswith("data: [DONE]") and s.headers["x-unlearn-path"] == "agents"
        bad = httpx.post(f"{front}/chat/completions", json={**plain, "vllm_xargs": {"unlearn_threshold": 1.5}})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "vllm_xargs"
        echo = httpx.post(f"{front}/chat/completions", json={**plain, "echo": True})     # the engine refuses it too
        assert echo.status_code == 400 and httpx.post(f"{direct}/chat/completions", json={**plain, "echo": True}).status_code == 400
        assert httpx.post(f"http://127.0.0.1:{port}/admin/targets", json={"name": "Oskar Vell"}, headers=admin).status_code == 201
        q = {**plain, "messages": [{"role": "user", "content": "Tell me about Oskar Vell."}]}
        assert httpx.post(f"{front}/chat/completions", json=q, timeout=300, headers=admin).headers["x-unlearn-path"] == "agents"
        # relayed with the live target in vllm_xargs: the guarded engine (its boundary middleware too) accepts it
        assert httpx.post(f"{front}/chat/completions", json=plain, timeout=120).status_code == 200
        assert json.loads((tmp_path / "live.json").read_text())["targets"][0]["name"] == "Oskar Vell"
    assert server.returncode is not None
    with pytest.raises(httpx.ConnectError):   # stopping the front stopped vLLM too
        httpx.get(f"{direct}/models", timeout=5)
