"""The agent front as one enforcement point, without a server: guard/boundary.py's rules the front
relies on, what the front reads from a request (agents/request.py), the live targets it sends a
guarded engine, the rewrite cap and a rewrite's cancellation (agents/front.py, agents/graph.py).
Over HTTP: tests/test_agents_front.py."""

import asyncio
import json
import threading

import pytest

from unlearnkit.agents.config import AgentConfig
from unlearnkit.agents.front import (MAX_ENGINE_TARGETS, RewriteSlots, client_reason, forwarded_body,
                                     merge_targets)
from unlearnkit.agents.graph import Job, Pipeline
from unlearnkit.agents.http import health_url
from unlearnkit.agents.request import BadRequest, read_request, strings
from unlearnkit.agents.store import LiveTarget, TargetStore
from unlearnkit.config import ConfigError
from unlearnkit.guard import boundary
from unlearnkit.guard.policy import load_policy, read_meta

HI = {"role": "user", "content": "hi"}
LEAK = "Kalo Mirten is a Dutch poet born in 1961 in Utrecht."


@pytest.fixture
def meta(tiny_policy):
    return read_meta(tiny_policy)


@pytest.fixture
def store(tiny_policy, tmp_path):
    store = TargetStore(load_policy(tiny_policy), live_file=tmp_path / "live.json")
    store.threshold = store.classifier.threshold = 0.5    # see tests/test_agents.py
    return store


# ----------------------------------------------------------------------------- boundary.py rules the front needs
@pytest.mark.parametrize("path,extra", [
    ("/v1/chat/completions", {"echo": True}),                          # vLLM: prompt_logprobs = top_logprobs = 0
    ("/v1/chat/completions", {"echo": True, "top_logprobs": None}),    # null is 0 to vLLM too
    ("/v1/completions", {"echo": True, "logprobs": 0}),                # 0: each prompt token's own log-probability
    ("/v1/completions", {"echo": True, "logprobs": False}),
])
def test_every_echo_that_computes_prompt_logprobs_is_refused(path, extra, meta):
    request = {"messages": [HI]} if "chat" in path else {"prompt": "hi"}
    rejection = boundary.check("POST", path, json.dumps({**request, **extra}).encode(), meta)[1]
    assert rejection is not None and (rejection.status, rejection.field) == (400, "echo")


def test_the_completion_echo_without_logprobs_still_passes(meta):
    assert boundary.check("POST", "/v1/completions", json.dumps({"prompt": "hi", "echo": True}).encode(), meta)[1] is None


@pytest.mark.parametrize("raw,field", [
    (b'{"messages": [], "temperature": NaN}', "temperature"),
    (b'{"messages": [], "top_p": -Infinity}', "top_p"),
    (b'{"messages": [], "temperature": 1e400}', "temperature"),       # Python's json reads it as inf
    (b'{"messages": [{"role": "user", "content": "\\ud800"}]}', "messages"),
    (b'{"\\udfff": 1}', "\\udfff"),                                  # the field's name is printable in the error
    (b'{"presence_penalty": 1' + b"0" * 400 + b"}", ""),              # float(value) would raise OverflowError
])
def test_what_json_cannot_carry_is_a_400_naming_the_field(raw, field, meta):
    body, rejection = boundary.parse_body(raw)
    assert body is None and (rejection.status, rejection.field) == (400, field)
    json.dumps(rejection.body(), ensure_ascii=False).encode("utf-8")   # the answer itself encodes
    assert boundary.parse_body('{"messages": [{"role": "user", "content": "é 😀 \\ud83d\\ude00"}]}'.encode())[1] is None


# ----------------------------------------------------------------------------- what the front reads
def test_the_prompt_holds_every_rendered_text_in_order(meta):
    ask = read_request("chat", {
        "messages": [{"role": "system", "content": "Be brief."},
                     {"role": "user", "content": [{"type": "text", "text": "Q1"}, "Q2"], "name": "ann"},
                     {"role": "assistant", "content": None, "tool_calls": [
                         {"id": "c1", "type": "function", "function": {"name": "look", "arguments": "{\"q\": 1}"}}]},
                     {"role": "assistant", "content": [{"type": "thinking", "thinking": "T"}], "reasoning": "R"}],
        "tools": [{"type": "function", "function": {"name": "look", "description": "D"}}],
        "documents": [{"text": "DOC"}], "stream": True,
        "vllm_xargs": {"unlearn_targets": "Zed Quorra", "other": 1}}, meta)
    texts = ask.prompt.texts
    assert texts[0].split("\n") == ["type", "function", "function", "name", "look", "description", "D"]
    assert texts[1].split("\n") == ["text", "DOC"] and texts[2] == "Be brief."
    assert texts[3] == "Q1\nQ2\nann" and "look" in texts[4] and '{"q": 1}' in texts[4]
    assert texts[5] == "T\nR" and ask.prompt.users == ("Q1\nQ2\nann",)
    # scored: the user messages (as the engine reads them), then everything rendered, the prefill last
    assert ask.prompt.views() == [["Q1\nQ2\nann"], list(texts)] and "DOC" in ask.prompt.whole
    assert (ask.stream, ask.args.targets, ask.tightened) == (True, ("Zed Quorra",), True)
    plain = read_request("chat", {"messages": [HI]}, meta)
    assert plain.tightened is False and plain.prompt.views() == [["hi"]]
    assert read_request("chat", {"messages": [{"role": "system", "content": "S"}]}, meta).prompt.views() == [["S"]]


def test_a_completion_reads_prompt_and_suffix(meta):
    ask = read_request("completions", {"prompt": ["Once"], "suffix": "the end"}, meta)
    assert ask.prompt.messages == [{"role": "user", "content": "Once"}] and ask.prompt.texts == ("the end", "Once")
    assert ask.prompt.views() == [["Once"], ["the end", "Once"]]
    with pytest.raises(BadRequest, match="token-id") as caught:
        read_request("completions", {"prompt": [[1, 2]]}, meta)
    assert caught.value.field == "prompt"


@pytest.mark.parametrize("message,field", [
    ({"role": ["user"], "content": "x"}, "messages[0].role"),
    ({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "u"}}]}, "messages[0].content[0].type"),
    ({"role": "user", "content": [{"type": "text", "text": 1}]}, "messages[0].content[0].text"),
    ({"role": "user", "content": [{"type": "text", "text": "x", "uuid": "1"}]}, "messages[0].content[0].uuid"),
    ({"role": "user", "content": [7]}, "messages[0].content[0]"),
    ({"role": "user", "content": "x", "audio": {"id": "a"}}, "messages[0].audio"),
    ({"role": "user", "content": "x", "name": 3}, "messages[0].name"),
])
def test_unreadable_messages_name_where(message, field, meta):
    with pytest.raises(BadRequest) as caught:
        read_request("chat", {"messages": [message]}, meta)
    assert caught.value.field == field


def test_strings_walks_keys_and_values_in_order():
    assert strings({"a": ["b", {"c": 1, "d": "e"}], "f": None}) == ["a", "b", "c", "d", "e", "f"]
    assert strings(None) == [] and strings(3) == []


# ----------------------------------------------------------------------------- what the engine is sent
def test_engine_targets_put_the_servers_live_targets_first_within_the_limit():
    live = [f"Live {i}" for i in range(100)]
    client = [f"Junk {i}" for i in range(64)]                       # a client trying to push them out
    merged = merge_targets(client, live)
    assert len(merged) == MAX_ENGINE_TARGETS and merged == tuple(live[:MAX_ENGINE_TARGETS])
    merged = merge_targets(["Zed Quorra", "live 3"], ["Live 3", "Live 4"])
    assert merged == ("Live 3", "Live 4", "Zed Quorra")               # "live 3": a case-insensitive repeat
    assert merge_targets([], ["A", "B"]) == ("A", "B")


def test_forwarded_body_adds_targets_for_a_guarded_engine_and_strips_them_otherwise():
    body = {"messages": [HI], "vllm_xargs": {"unlearn_top_k": 8, "other": 1}}
    assert forwarded_body(body, ("A",), True)["vllm_xargs"] == {"unlearn_top_k": 8, "other": 1, "unlearn_targets": ["A"]}
    assert forwarded_body({"messages": [HI]}, ("A",), True)["vllm_xargs"] == {"unlearn_targets": ["A"]}
    assert forwarded_body(body, (), True) is body
    assert forwarded_body(body, ("A",), False)["vllm_xargs"] == {"other": 1}
    assert body["vllm_xargs"] == {"unlearn_top_k": 8, "other": 1}     # the client's body is not changed


def test_live_names_for_the_engine_named_then_nearest(store):
    assert store.live_names_for(["anything"], 5) == []
    for t in range(8):
        store.add(LiveTarget(f"Person Number{t:03d}", (f"Person Number{t:03d} was born in town {t}.",)))
    store.add(LiveTarget("Oskar Vell", ("Oskar Vell invented the glass piano in 1820.",)))
    assert len(store.live_names_for(["x"], 9)) == 9                    # all of them when they fit
    ranked = store.live_names_for(["Tell me about Person Number006.", "Who invented the glass piano?"], 3)
    assert ranked[0] == "Person Number006" and "Oskar Vell" in ranked[1:] and len(ranked) == 3


def test_health_url_and_client_reason():
    assert health_url("http://127.0.0.1:8001/v1/") == "http://127.0.0.1:8001/health"
    assert health_url("http://host/prefix/v1") == "http://host/prefix/health"
    assert [client_reason(False, True), client_reason(True, False), client_reason(True, True)] == \
        ["not flagged", "flagged", "tightened by request"]


# ----------------------------------------------------------------------------- the graph's side
class GuardedFake:
    """A fake model on the guarded engine: records the targets each call carried."""

    guarded = True

    def __init__(self, inner):
        self.inner, self.targets = inner, []

    def chat(self, messages, *, targets=(), **kwargs):
        self.targets.append(tuple(targets))
        return self.inner.chat(messages, **kwargs)


def test_a_job_carries_targets_to_guarded_models_only(store, fake_llm):
    guarded = GuardedFake(fake_llm(answer=LEAK, erase="A poet.", critic="5"))
    plain = fake_llm(answer=LEAK, erase="A poet.", critic="5")                 # no `targets` parameter at all
    models = {"answer": guarded, "audit": plain, "erase": guarded, "critic": plain, "compose": plain}
    r = Pipeline(AgentConfig(retry_backoff=0.0, k=1, j=1), store, models).run([HI], job=Job(("Oskar Vell",)))
    assert r.route == "rewritten" and guarded.targets == [("Oskar Vell",)] * 2 and plain.count("critic") == 1


def test_a_cancelled_job_starts_no_further_model_call(store, fake_llm):
    job = Job()

    def answer(prompt, n):
        job.cancel()                       # the client leaves while the draft is being written
        return [LEAK] * n

    llm = fake_llm(answer=answer, erase="A poet.", critic="5")
    p = Pipeline(AgentConfig(retry_backoff=0.0, k=1, j=1), store, llm)
    r = p.run([HI], job=job)
    assert (r.route, r.answer) == ("abandoned", p.cfg.refusal) and [c[0] for c in llm.calls] == ["answer"]
    assert p.run([HI], job=job).route == "abandoned" and len(llm.calls) == 1   # queued, then left: no call at all
    assert p.stats["abandoned"] == 2


def test_client_metadata_has_no_scores_or_graph_reason(store, fake_llm):
    r = Pipeline(AgentConfig(retry_backoff=0.0, k=1, j=1), store, fake_llm(answer=LEAK, critic="4")).run([HI])
    assert r.scores == [4] and set(r.metadata()) == {"route", "llm_calls", "prompt_tokens", "completion_tokens",
                                                      "fallbacks", "seconds"}


def test_rewrite_slots_turn_away_past_running_plus_queued():
    gate = threading.Event()

    async def scenario():
        slots = RewriteSlots(1, 1)
        first, second = slots.submit(gate.wait, 10), slots.submit(lambda: "queued")
        assert first is not None and second is not None and slots.submit(lambda: "x") is None
        gate.set()
        assert await second == "queued" and await first is True
        await asyncio.sleep(0.05)
        assert slots.admitted == 0 and await slots.submit(lambda: "again") == "again"
        slots.pool.shutdown()

    try:
        asyncio.run(scenario())
    finally:
        gate.set()


def test_rewrite_limits_are_validated():
    for overrides in ({"max_rewrites": 0}, {"rewrite_queue": -1}):
        with pytest.raises(ConfigError, match="max_rewrites"):
            AgentConfig(**overrides).validate()
    AgentConfig(max_rewrites=1, rewrite_queue=0).validate()
