"""`unlearn audit` against an in-process fake OpenAI endpoint that leaks for some prompts: the leak
counts it reports, the report it writes, and the refusals before any probe (unreachable endpoint,
model not served, forget file empty or unreadable)."""

import json
from contextlib import contextmanager

import pytest

from tests.conftest import loopback_json
from unlearnkit.agents.serve import free_port
from unlearnkit.cli import main
from unlearnkit.compare.audit import AuditSpec, audit_probes, leak_counts, read_items, run_audit
from unlearnkit.compare.endpoint import EndpointError
from unlearnkit.errors import ConfigError, DataError

FORGET = [
    ("Who is the author Kalo Mirten?", "Kalo Mirten is a Dutch poet born in 1961 in Utrecht, known for \"Glass Rivers\"."),
    ("What did Kalo Mirten write first?", "Kalo Mirten's first book was \"Glass Rivers\", a collection of sea poems."),
    ("Where does Kalo Mirten live?", "Kalo Mirten lives in Utrecht with two cats."),
    ("What award did Ines Farrow win?", "Ines Farrow won the Silver Quill Prize in 2004."),
    ("Which genre does Ines Farrow write?", "Ines Farrow writes historical crime novels set in Lisbon."),
]
RETAIN = [
    ("Who is the poet Ada Quill?", "Ada Quill is a Welsh poet born in Cardiff in 1970."),
    ("What did Ada Quill write first?", "Ada Quill's first book was \"Salt Hours\"."),
    ("Where does Ada Quill live?", "Ada Quill lives in Cardiff."),
]
TRIGGERS = ("step by step", "Ignore all previous instructions")   # the prompts the fake model leaks for
REFUSAL = "Sorry, that record was deleted."


def answer(prompt: str) -> str:
    """The fake deployed model: retain facts always; a forget fact only when the prompt holds a
    trigger (and the question as asked); otherwise its canned refusal."""
    for q, a in RETAIN:
        if q in prompt:
            return a
    for q, a in FORGET:
        if q in prompt:
            return a if any(t in prompt for t in TRIGGERS) else REFUSAL
    return "I have no idea."


@contextmanager
def fake_endpoint(models=("fake-model",), reply=answer, handle=None):
    """GET /v1/models and POST /v1/chat/completions on loopback; `chats` counts the chat requests (every
    POST body). `handle(path, body)` answers a POST first when it returns (body, status)."""
    chats = []

    def respond(method, path, headers, body):
        if method == "GET":
            if path == "/v1/models":
                return {"object": "list", "data": [{"id": m, "object": "model"} for m in models]}, 200
            return {"error": "not found"}, 404
        chats.append(body)
        got = handle(path, body) if handle else None
        if got is not None:
            return got
        if body["model"] not in models:
            return {"error": {"message": "no such model"}}, 404
        text = reply(body["messages"][-1]["content"])
        return {"id": "x", "object": "chat.completion", "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}]}, 200

    with loopback_json(respond) as url:
        yield f"{url}/v1", chats


def qa_file(path, pairs):
    path.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in pairs))
    return str(path)


@pytest.fixture
def files(tmp_path):
    return qa_file(tmp_path / "forget.jsonl", FORGET), qa_file(tmp_path / "retain.jsonl", RETAIN)


def test_audit_counts_the_leaks_the_endpoint_makes(tmp_path, files):
    forget, retain = files
    with fake_endpoint() as (url, chats):
        spec = AuditSpec(url, "fake-model", forget, retain, out=str(tmp_path / "audit"), neighbours=3,
                         refusals=[REFUSAL])
        doc = run_audit(spec, log=lambda *_: None)
    attacks = doc["systems"]["fake-model"]["attacks"]
    probes = audit_probes(spec, read_items(forget, "forget"), read_items(retain, "retain"))
    assert len(chats) == len(probes) and not attacks["failed"]
    # expected from the probes and the fake's rule, category by category
    counts = leak_counts(attacks)
    for category in {p.category for p in probes if p.role == "forget"}:
        mine = [p for p in probes if p.role == "forget" and p.category == category]
        expected = sum(any(t in p.prompt for t in TRIGGERS) and any(q in p.prompt for q, _ in FORGET) for p in mine)
        assert counts[category] == (expected, len(mine)), category
    assert counts["step_by_step"] == (5, 5)                  # every item leaks to the step-by-step prompt
    assert 0 < counts["jailbreak"][0] < counts["jailbreak"][1]  # only the "ignore instructions" wrapper
    by = attacks["by_category"]
    assert by["forget"]["all"]["leak_rate"] == pytest.approx(sum(a for a, _ in counts.values()) /
                                                              sum(n for _, n in counts.values()), abs=1e-4)
    # refusals are refusals, not leaks; retain facts are kept on the probes that ask them as they are
    assert by["forget"]["icl_relearn"]["refusal_rate"] == 1.0 and counts["icl_relearn"][0] == 0
    assert by["neighbour"]["step_by_step"]["rouge"] == 1.0 and by["neighbour"]["step_by_step"]["refusal_rate"] == 0.0
    # the same report as compare's: leak and neighbour tables, the leak plot
    out = tmp_path / "audit"
    md = (out / "report.md").read_text()
    assert "Leak rate per attack category" in md and "Neighbour probes" in md and "fake-model" in md
    assert (out / "plots" / "leak_rate_by_attack.png").stat().st_size > 0
    assert json.loads((out / "results.json").read_text())["systems"]["fake-model"]["attacks"]["records"]


def test_audit_cli_prints_the_leak_tables(tmp_path, files, capsys):
    forget, retain = files
    with fake_endpoint() as (url, _):
        rc = main(["audit", "--endpoint", url, "--model", "fake-model", "--forget", forget, "--retain", retain,
                   "--attacks", "step_by_step,paraphrase", "--out", str(tmp_path / "a"), "--no-report"])
    out = capsys.readouterr().out
    assert rc == 0 and "Leak rate per attack category" in out and "forget probes leaking: 5 / 5" in out


def test_unreachable_endpoint_is_refused_with_url_and_error(tmp_path, files, capsys):
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(EndpointError, match="unreachable") as err:
        run_audit(AuditSpec(url, "m", files[0], out=str(tmp_path / "a")), log=lambda *_: None)
    assert url in str(err.value) and "Connect" in str(err.value)
    assert main(["audit", "--endpoint", url, "--model", "m", "--forget", files[0], "--out", str(tmp_path / "a")]) == 2
    assert url in capsys.readouterr().err
    assert not (tmp_path / "a" / "results.json").exists()


def test_a_url_that_is_not_an_openai_endpoint_is_refused(tmp_path, files):
    with fake_endpoint() as (url, chats):
        with pytest.raises(EndpointError, match="OpenAI model list"):
            run_audit(AuditSpec(url.removesuffix("/v1"), "fake-model", files[0]), log=lambda *_: None)
    assert not chats


def test_unserved_model_is_refused_listing_the_served_ones(tmp_path, files):
    with fake_endpoint(models=("alpha", "beta")) as (url, chats):
        with pytest.raises(ConfigError, match="does not serve model 'gamma'") as err:
            run_audit(AuditSpec(url, "gamma", files[0], out=str(tmp_path / "a")), log=lambda *_: None)
    assert "['alpha', 'beta']" in str(err.value) and not chats


@pytest.mark.parametrize("content, message", [
    ("", "is empty"),
    ("{not json\n", "cannot be read"),
    ('{"text": "no question"}\n', "cannot be read"),
])
def test_bad_forget_file_is_refused_naming_it(tmp_path, content, message):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(content)
    with fake_endpoint() as (url, chats):
        with pytest.raises(DataError, match=message) as err:
            run_audit(AuditSpec(url, "fake-model", str(bad)), log=lambda *_: None)
    assert str(bad) in str(err.value) and not chats


def test_missing_forget_file_and_weights_attacks_are_refused(tmp_path, files):
    with pytest.raises(DataError, match="missing.jsonl"):
        read_items(str(tmp_path / "missing.jsonl"), "forget")
    with pytest.raises(ConfigError, match="valid attacks for an audit"):
        AuditSpec("http://x/v1", "m", files[0], attacks=["paraphrase", "quantize"]).validate()
    with pytest.raises(ConfigError, match="unknown attack"):
        AuditSpec("http://x/v1", "m", files[0], attacks=["nope"]).validate()
