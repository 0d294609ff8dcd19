"""The agent layer without a server: pure node rules, config, target store, and the graph's routes
with a deterministic fake model (tests/conftest.py: FakeLLM)."""

import json

import pytest

from unlearnkit.agents.config import AgentConfig, load_agent_config
from unlearnkit.agents.graph import Pipeline
from unlearnkit.agents.llm import LLMError
from unlearnkit.agents.nodes import choose, clean_rewrite, parse_score, parse_verdict
from unlearnkit.agents.store import LiveTarget, TargetStore, parse_live_target
from unlearnkit.config import ConfigError
from unlearnkit.guard.policy import load_policy

LEAK = "Kalo Mirten is a Dutch poet born in 1961 in Utrecht."
Q = [{"role": "user", "content": "Who is the author Kalo Mirten?"}]


@pytest.fixture
def store(tiny_policy, tmp_path):
    store = TargetStore(load_policy(tiny_policy), live_file=tmp_path / "live.json")
    # the tiny policy's threshold, calibrated on 12 general questions, is loose (0.27): any question
    # about a person passes it; these tests want one that tells them apart
    store.threshold = store.classifier.threshold = 0.5
    return store


def pipeline(store, llm, **cfg):
    return Pipeline(AgentConfig(retry_backoff=0.0, **cfg), store, llm)


# ----------------------------------------------------------------------------- pure rules
def test_parse_score_and_verdict():
    assert parse_score("4") == 4 and parse_score("Score: 2/5") == 2 and parse_score("I'd say 5.") == 5
    assert parse_score("10 out of 10") is None and parse_score("3.5") is None and parse_score("great") is None
    assert parse_score("") is None and parse_score(None) is None
    assert parse_verdict("YES, it names the author") is True and parse_verdict("no.") is False
    assert parse_verdict("Nothing here") is None and parse_verdict("yesterday") is None


def test_clean_rewrite_and_choose():
    assert clean_rewrite("Rewritten answer: <<<The poet lives abroad.>>>") == "The poet lives abroad."
    assert clean_rewrite("  <<< >>> ") == "" and clean_rewrite(None) == ""
    assert choose([5, 2, 4], 2, 3.5) == ([0, 2], 4.5, False)
    assert choose([2, None, 3], 2, 3.5) == ([2, 0], 2.5, True)     # malformed counts as 1, ranks last
    assert choose([None, None], 1, 1.0) == ([0], 1.0, False)        # threshold 1 accepts the worst
    assert choose([], 2, 3.0) == ([], 0.0, True)


def test_agent_config_is_strict(tmp_path):
    cfg = load_agent_config("configs/agents/default.yaml")
    assert (cfg.k, cfg.j) == (3, 2) and 1 <= cfg.threshold <= 5
    for overrides, message in ((["k=2", "j=3"], "j must be between"), (["threshold=7"], "threshold"),
                               (["colour=red"], "unknown key"), (["nodes.judge.model=x"], "unknown node"),
                               (["prompts.critic=Rate {variant}"], "must contain"),
                               (["prompts.audit=Check {facts} {question} {draft} {secret}"], "unknown placeholder"),
                               (["nodes.critic=5"], "expected a mapping")):
        with pytest.raises(ConfigError, match=message):
            load_agent_config("configs/agents/default.yaml", overrides)
    cfg = load_agent_config(None, ["nodes.critic.base_url=http://judge:9000/v1", "nodes.critic.model=judge"])
    assert cfg.endpoint("critic").model == "judge" and cfg.endpoint("answer").base_url == ""


# ----------------------------------------------------------------------------- store
def test_store_classifies_policy_and_live_targets(store, tmp_path):
    d = store.classify("Tell me about Kalo Mirten.", ["Tell me about Kalo Mirten."])
    assert d.flagged and d.reason.startswith("names")
    q = "What did Oskar Vell invent?"
    assert not store.classify(q, [q]).flagged
    assert store.classify(q, [q], extra_names=["Oskar Vell"]).flagged        # a request's own target
    assert store.add(LiveTarget("Oskar Vell", ("Oskar Vell invented the glass piano in 1820.",)))
    assert store.classify(q, [q]).flagged
    assert store.classify("Who is Vell?", ["Who is Vell?"]).flagged is False   # 4 letters: not distinctive
    similar = "Which musical instrument made of glass was invented in 1820?"
    assert store.classify(similar, [similar]).flagged                         # semantic, no name
    assert not store.add(LiveTarget("kalo mirten"))                           # a policy target already
    saved = json.loads((tmp_path / "live.json").read_text())
    assert saved["targets"][0]["name"] == "Oskar Vell"
    assert store.remove("OSKAR vell") and not store.remove("Oskar Vell")
    assert not store.classify(q, [q]).flagged


@pytest.mark.parametrize("written", ["M i r r v a s k d o v", "Mirr\u200bvask\u200bdov", "Mirrvаskdov",   # Cyrillic а
                                     "M1rrv45kd0v", "vodksavrriM", "Ｍｉｒｒｖａｓｋｄｏｖ", "Ｍirr-vask-dov"])
def test_a_live_target_in_disguise_is_named(store, written):
    """A live target is found in a prompt the way a policy target is: folded (homoglyphs, zero-width and
    full-width characters), de-leeted, its spaced letters joined, backwards."""
    assert store.add(LiveTarget("Ilse Mirrvaskdov", ("Ilse Mirrvaskdov composed the harbour suite.",)))
    question = f"Tell me about the composer {written}."
    assert [t.name for t in store._live.named(question)] == ["Ilse Mirrvaskdov"], written
    assert store.classify(question, [question]).flagged
    assert store._live.named("Tell me about the composer Marta Velasquez.") == []


def test_store_watches_its_file(store, tmp_path):
    path = tmp_path / "live.json"
    q = "Where was Maren Dulcet born?"
    assert not store.classify(q, [q]).flagged
    path.write_text(json.dumps({"targets": [{"name": "Maren Dulcet", "facts": ["born in Oslo"]}]}))
    store.refresh()
    assert store.classify(q, [q]).flagged
    path.write_text("{not json")                     # a broken edit keeps the targets in force
    store.refresh()
    assert store.reload_errors == 1 and store.classify(q, [q]).flagged
    path.write_text(json.dumps({"targets": []}))
    store.refresh()
    assert not store.classify(q, [q]).flagged
    path.write_text(json.dumps({"targets": [{"name": "X", "colour": "red"}]}))
    store.refresh()
    assert store.reload_errors == 2
    with pytest.raises(ConfigError, match="unknown target field"):
        TargetStore(store.policy, live_file=path)     # at start-up a malformed file stops the server


def test_parse_live_target_errors():
    for bad, message in (("x", "must be an object"), ({"facts": []}, "'name'"), ({"name": " "}, "'name'"),
                         ({"name": "A", "facts": [1]}, "'facts'"), ({"name": "A", "x": 1}, "unknown")):
        with pytest.raises(ValueError, match=message):
            parse_live_target(bad)
    assert parse_live_target({"name": " Ada   Quill ", "facts": "one fact"}) == LiveTarget("Ada Quill", ("one fact",))


def test_retrieval_keeps_prompts_flat(store):
    """The audit prompt holds top_facts facts whatever the number of targets."""
    sizes = []
    for n in (0, 5, 60):
        for t in range(len(store.live_targets()), n):
            store.add(LiveTarget(f"Person Number{t:03d}", (f"Person Number{t:03d} was born in town {t}.",)))
        llm = FakeLLMLeak()
        pipeline(store, llm, top_facts=3).run(Q)
        audit = [p for r, p, _ in llm.calls if r == "erase"][0]
        sizes.append(len(audit.split("\n")))
        facts = store.retrieve(["Who is the author Kalo Mirten?"], 3)
        assert len(facts) == 3 and "Kalo Mirten" in facts[0].names
    assert len(set(sizes)) == 1, sizes


class FakeLLMLeak:
    """The smallest fake for the flat-prompt test: the draft leaks, everything else succeeds."""

    def __init__(self):
        self.calls = []

    def chat(self, messages, *, n=1, **_):
        from unlearnkit.agents.llm import Reply

        text = messages[-1]["content"]
        role = "erase" if text.startswith("Rewrite") else "critic" if text.startswith("Rate") else "other"
        self.calls.append((role, text, n))
        out = {"erase": "Safe.", "critic": "5"}.get(role, LEAK)
        return Reply([out] * n, len(text.split()), 1)


# ----------------------------------------------------------------------------- graph routes
def test_route_clean(store, fake_llm):
    llm = fake_llm(answer="The capital of France is Paris.", audit="NO")
    r = pipeline(store, llm).run([{"role": "user", "content": "What is the capital of France?"}])
    assert (r.route, r.answer) == ("clean", "The capital of France is Paris.")
    assert [c[0] for c in llm.calls] == ["answer", "audit"] and r.calls == 2 and r.prompt_tokens > 0


def test_route_leaking_draft_is_rewritten(store, fake_llm):
    llm = fake_llm(answer=LEAK, erase=lambda p, n: [f"The poet writes verse. ({i})" for i in range(n)],
                   critic=["5", "4", "2"], compose="A Dutch poet writes verse.")
    p = pipeline(store, llm, k=3, j=2, threshold=3.5)
    r = p.run(Q)
    assert r.route == "rewritten" and r.answer == "A Dutch poet writes verse."
    assert "Mirten" not in r.answer and sorted(r.scores) == [2, 4, 5]
    assert llm.count("audit") == 0            # the draft names the target: a leak without asking
    assert llm.count("erase") == 1 and [n for r_, _, n in llm.calls if r_ == "erase"] == [3]   # k in one call
    assert llm.count("critic") == 3 and llm.count("compose") == 1
    assert r.calls == 1 + 1 + 3 + 1 and p.stats["route_rewritten"] == 1
    by_node = r.prompt_tokens_by_node()
    assert {k: len(v) for k, v in by_node.items()} == {"answer": 1, "erase": 1, "critic": 3, "compose": 1}
    assert sum(map(sum, by_node.values())) == r.prompt_tokens
    assert ("critic", ("1", "2", "3", "4", "5")) in llm.constraints and ("answer", None) in llm.constraints
    erase_prompt = [t for r_, t, _ in llm.calls if r_ == "erase"][0]
    assert "Kalo Mirten" in erase_prompt and "Ines Farrow" not in erase_prompt   # retrieved, not the whole list


def test_route_unfixable_draft_is_refused(store, fake_llm):
    llm = fake_llm(answer="A poet from Utrecht, born 1961.", audit="YES", erase="A poet from Utrecht, born 1961.",
                   critic="1")
    p = pipeline(store, llm, k=2, j=1, threshold=3.0)
    r = p.run(Q)
    assert r.route == "refused" and r.answer == p.cfg.refusal and "mean critic score" in r.reason
    assert llm.count("audit") == 1 and llm.count("compose") == 0 and p.stats["route_refused"] == 1


def test_rewrite_naming_a_target_scores_worst_without_a_call(store, fake_llm):
    llm = fake_llm(answer=LEAK, erase=lambda p, n: ["Kalo Mirten is a poet."] + ["A poet."] * (n - 1), critic="5")
    r = pipeline(store, llm, k=2, j=1).run(Q)
    assert r.route == "rewritten" and r.answer == "A poet." and r.scores == [1, 5] and llm.count("critic") == 1


def test_composed_answer_naming_a_target_falls_back_or_refuses(store, fake_llm):
    llm = fake_llm(answer=LEAK, erase=lambda p, n: [f"A poet ({i})." for i in range(n)], critic="5",
                   compose="Ines Farrow and a poet.")
    r = pipeline(store, llm, k=2, j=2).run(Q)
    assert r.route == "rewritten" and "Farrow" not in r.answer and r.answer.startswith("A poet")


def test_malformed_scores_retry_then_count_as_worst(store, fake_llm):
    replies = {"(0)": iter(["great!", "5"]), "(1)": iter(["excellent", "hmm"])}   # per variant, in order

    def critic(prompt, n):
        return [next(replies["(0)" if "(0)" in prompt else "(1)"])]

    llm = fake_llm(answer=LEAK, erase=lambda p, n: [f"A poet ({i})." for i in range(n)], critic=critic)
    p = pipeline(store, llm, k=2, j=2, threshold=2.0, retries=1)
    r = p.run(Q)
    # variant 0: "great!" then "5"; variant 1: two malformed replies -> counted as 1 (None)
    assert r.scores == [5, None] and r.route == "rewritten"
    assert p.stats["malformed_scores"] == 1 and p.stats["retries"] == 2 and llm.count("critic") == 4
    assert sum("malformed score" in e for e in r.events) == 3
    all_bad = fake_llm(answer=LEAK, erase="A poet.", critic="fine")
    p2 = pipeline(store, all_bad, k=2, j=1, threshold=2.0, retries=1)
    assert p2.run(Q).route == "refused" and p2.stats["malformed_scores"] == 2


def test_empty_rewrites_retry_then_refuse(store, fake_llm):
    llm = fake_llm(answer=LEAK, erase=["", "  ", "Rewritten answer: A poet."], critic="4")
    p = pipeline(store, llm, k=1, j=1, threshold=3.0, retries=2)
    r = p.run(Q)
    assert r.route == "rewritten" and r.answer == "A poet." and p.stats["empty_rewrites"] == 2
    never = fake_llm(answer=LEAK, erase="")
    p2 = pipeline(store, never, k=2, j=1, retries=1)
    r2 = p2.run(Q)
    assert r2.route == "refused" and "empty" in r2.reason and p2.stats["empty_rewrite_refusals"] == 1
    assert never.count("erase") == 2


def test_unreachable_endpoint_retries_then_refuses(store, fake_llm):
    down = fake_llm(answer=LLMError("connection refused"))
    p = pipeline(store, down, retries=2)
    r = p.run(Q)
    assert r.route == "refused" and "unreachable" in r.reason and down.count("answer") == 3
    assert p.stats["llm_errors"] == 3 and p.stats["endpoint_failures"] == 1
    flaky = fake_llm(answer=[LLMError("timeout"), "The capital is Paris."], audit="NO")
    r = pipeline(store, flaky, retries=1).run([{"role": "user", "content": "What is the capital of France?"}])
    assert r.route == "clean" and r.calls == 3


def test_unreadable_audit_is_a_leak(store, fake_llm):
    llm = fake_llm(answer="He is a poet.", audit="I cannot tell", erase="A writer.", critic="5")
    p = pipeline(store, llm, k=1, j=1, retries=1)
    r = p.run(Q)
    assert r.route == "rewritten" and p.stats["malformed_verdicts"] == 1 and llm.count("audit") == 2


def test_internal_error_never_crashes(store, fake_llm):
    llm = fake_llm(answer=LEAK, erase=lambda p, n: 42)    # a model client returning garbage
    r = pipeline(store, llm).run(Q)
    assert r.route == "refused" and r.reason == "internal error in the rewriter"


def test_request_targets_reach_the_rewriter(store, fake_llm):
    llm = fake_llm(answer="Oskar Vell built a glass piano.", erase="Someone built an instrument.", critic="5")
    r = pipeline(store, llm, k=1, j=1).run([{"role": "user", "content": "Who built the glass piano?"}],
                                           extra_targets=["Oskar Vell"])
    assert r.route == "rewritten" and "Vell" not in r.answer
    assert "Oskar Vell" in [t for role, t, _ in llm.calls if role == "erase"][0]


def test_probe_index_agrees_with_mentions():
    from unlearnkit.guard.phrases import ProbeIndex, mentions

    probes = ["Basil Mahfouz Al-Kuwaiti", "Al-Kuwaiti", "Abilov", "Le Petit Sultan", "O'Brien", "J.K. Rowling"]
    index = ProbeIndex((p, p) for p in probes)
    texts = ["Who is basil mahfouz al-kuwaiti?", "Al-Kuwaiti's novels", "Abilova wrote", "an Abilov novel",
             "le petit sultan, a book", "Mr O'Brien", "by J.K. Rowling.", "Kuwaiti authors", "Abilov_x", "Petit Sultan"]
    for text in texts:
        assert index.find(text) == {p for p in probes if mentions(text, [p])}, text
    assert index.find("le   petit\tsultan") == {"Le Petit Sultan"}   # spacing does not matter
    assert ProbeIndex([]).find("anything") == set()


def test_request_targets_do_not_inflate_prompts(store, fake_llm):
    """64 request targets: the erase prompt holds the named one and top_facts facts, not 64; the
    draft is still checked against every request target."""
    many = [f"Fresh Person{i:02d} Tester" for i in range(63)] + ["Oskar Vell"]
    llm = fake_llm(answer="Oskar Vell built a glass piano.", erase="Someone built an instrument.", critic="5")
    r = pipeline(store, llm, k=1, j=1, top_facts=3).run([{"role": "user", "content": "Who built the glass piano?"}],
                                                        extra_targets=many)
    erase = [t for role, t, _ in llm.calls if role == "erase"][0]
    assert r.route == "rewritten" and "Oskar Vell" in erase
    assert sum(f"Fresh Person{i:02d}" in erase for i in range(63)) <= 2
    llm = fake_llm(answer="Fresh Person40 Tester built it.", erase="Someone built an instrument.", critic="5")
    r = pipeline(store, llm, k=1, j=1, top_facts=3).run([{"role": "user", "content": "Who built the glass piano?"}],
                                                        extra_targets=many)
    assert r.route == "rewritten" and "Person40" not in r.answer


def test_rewrite_calls_wait_for_passthrough_requests():
    import threading
    import time

    from unlearnkit.agents.lanes import Lanes

    lanes = Lanes(patience=5.0)
    started = []
    lanes.enter()
    t = threading.Thread(target=lambda: (lanes.rewrite_turn(), started.append(time.perf_counter())))
    t.start()
    time.sleep(0.3)
    assert not started                       # a passthrough request is in flight: the call waits
    left = time.perf_counter()
    lanes.leave()
    t.join(2)
    assert started and started[0] - left < 1.0
    impatient = Lanes(patience=0.2)
    impatient.enter()                        # a passthrough that never ends cannot starve rewrites
    t0 = time.perf_counter()
    impatient.rewrite_turn()
    assert 0.15 < time.perf_counter() - t0 < 2.0


def test_every_model_call_waits_for_its_turn(store, fake_llm):
    from unlearnkit.agents.graph import Job

    turns = []
    llm = fake_llm(answer=LEAK, erase="Someone wrote a book.", critic="5")
    r = pipeline(store, llm).run(Q, job=Job(turn=lambda: turns.append(len(llm.calls))))
    assert r.route == "rewritten"
    assert turns == list(range(len(llm.calls)))   # one turn before each call, none after
