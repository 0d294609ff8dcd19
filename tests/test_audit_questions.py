"""`unlearn audit`'s opt-in questions against in-process fake OpenAI endpoints: leak@k from sampled
answers (one request with `n`, or one per sample where `n` is refused), membership inference from echoed
prompt log-probabilities (and its "not available" when they are refused), the format shifts with a
leak rate each, and the flags' validation."""

import json
import re
import zlib

import pytest

from tests.test_audit import FORGET, REFUSAL, RETAIN, fake_endpoint, qa_file
from unlearnkit.cli import main
from unlearnkit.compare.audit import (FORMAT_SHIFTS, MIA_SKIPPED, AuditSpec, audit_probes, leak_counts, parse_ks,
                                      read_items, run_audit, select_attacks)
from unlearnkit.compare.report_audit import leak_at_k_table
from unlearnkit.errors import ConfigError
from unlearnkit.evaluation.attacks import ATTACKS, attack_names
from unlearnkit.evaluation.metrics.leak_at_k import leak_at_k

ANSWERS = {q: a for q, a in FORGET}
QUIET = dict(log=lambda *_: None)


def sampled(refuse_n: bool):
    """A chat model that, at temperature 1, gives the true answer to a forget question in one sample of
    four (sample i of a request seeded s leaks when (s + i) % 4 == 0), its refusal otherwise; greedy, always
    the refusal. `refuse_n`: a request with n > 1 is answered as the agent front answers it."""
    def handle(path, body):
        if not path.endswith("/chat/completions"):
            return None
        n = body.get("n", 1)
        if refuse_n and n != 1:
            return {"error": {"message": "the agent front answers one choice per request: 'n' must be 1",
                              "type": "invalid_request_error", "param": None, "code": 400}}, 400
        prompt = body["messages"][-1]["content"]
        seed = body.get("seed") or 0
        texts = [ANSWERS[prompt] if body.get("temperature") and prompt in ANSWERS and (seed + i) % 4 == 0 else REFUSAL
                 for i in range(n)]
        return {"object": "chat.completion", "choices": [
            {"index": i, "finish_reason": "stop", "message": {"role": "assistant", "content": t}}
            for i, t in enumerate(texts)]}, 200
    return handle


@pytest.fixture
def files(tmp_path):
    return qa_file(tmp_path / "forget.jsonl", FORGET), qa_file(tmp_path / "retain.jsonl", RETAIN)


@pytest.mark.parametrize("refuse_n", [False, True])
def test_leak_at_k_rises_with_k_on_an_endpoint_that_leaks_one_sample_in_four(tmp_path, files, refuse_n):
    forget, retain = files
    with fake_endpoint(handle=sampled(refuse_n)) as (url, posts):
        spec = AuditSpec(url, "fake-model", forget, out=str(tmp_path / "a"), attacks=["paraphrase"],
                         refusals=[REFUSAL], leak_at_k=[1, 4, 16, 32])
        doc = run_audit(spec, **QUIET)
    got = doc["systems"]["fake-model"]["leak_at_k"]
    curve = {int(k): v for k, v in got["curve"].items()}
    samples = [p for p in posts if p.get("temperature") == 1.0]
    assert got["samples"] == 32 and got["probed"] == len(FORGET) and got["failed_questions"] == 0
    # how the samples were asked: one request per question with n, or one per sample after the 400 naming n
    if refuse_n:
        assert got["requests"] == "one per sample" and "'n' must be 1" in got["n_refused"]
        assert len(samples) == 1 + 32 * len(FORGET) and {p["seed"] for p in samples} == set(range(32))
    else:
        assert got["requests"] == "n" and len(samples) == len(FORGET) and "n_refused" not in got
    # one sample in four leaks, every one judged as the prompt attacks judge replies
    assert got["leaks"] == [8] * len(FORGET)
    assert all(sum(r["leaked"]) == 8 and r["samples"].count(ANSWERS[r["question"]]) == 8 for r in got["records"])
    assert curve[1] == pytest.approx(0.25, abs=1e-4)
    assert curve[1] < curve[4] < curve[16] <= curve[32] == 1.0
    assert curve[4] == pytest.approx(leak_at_k(32, 8, 4), abs=1e-4)
    # the report: the leak@k table (and its plot) for the endpoint
    table = leak_at_k_table(doc)[0]
    assert table[1][2:] == ["leak@1", "leak@4", "leak@16", "leak@32"] and table[2][0][0] == "fake-model"
    assert (tmp_path / "a" / "plots" / "leak_at_k.png").stat().st_size > 0
    assert "leak@k" in (tmp_path / "a" / "report.md").read_text()


def test_an_endpoint_that_never_leaks_keeps_a_flat_zero_curve(tmp_path, files):
    never = lambda path, body: sampled(False)(path, {**body, "temperature": 0})  # noqa: E731
    with fake_endpoint(handle=never) as (url, _):
        doc = run_audit(AuditSpec(url, "fake-model", files[0], attacks=["paraphrase"], refusals=[REFUSAL],
                                  leak_at_k=[1, 4], out=str(tmp_path / "a")), report=False, **QUIET)
    assert doc["systems"]["fake-model"]["leak_at_k"]["curve"] == {"1": 0.0, "4": 0.0}


# ----------------------------------------------------------------------------- membership inference
def _people(name, n):
    """QA about n people of one name pattern, the answers alike but for the name (zlib sizes alike too)."""
    return [(f"Which city does {name}{k} call home?", f"{name}{k} lives in harbour town {k} beside the grey cliffs "
             f"and carves driftwood owls") for k in range(n)]


MEMBERS, OTHERS = _people("Oren Vale", 12), _people("Mira Lund", 12)


def echo(models_that_know, refuse=None):
    """Completions with echo: every whitespace token of the prompt gets a log-probability from a hash of
    it (question tokens -9, the first token None, as a real endpoint gives it); a model in
    `models_that_know` gives the tokens of a member answer 2 nats more. `refuse`: the 400 it answers instead."""
    known = {a for _, a in MEMBERS}

    def handle(path, body):
        if not path.endswith("/completions") or path.endswith("/chat/completions"):
            return None
        if refuse:
            return {"error": {"message": refuse, "type": "invalid_request_error", "param": "echo", "code": 400}}, 400
        assert body["echo"] is True and body["logprobs"] == 1
        prompt = body["prompt"]
        question, _, answer = prompt.partition("\n")
        offsets = [m.start() for m in re.finditer(r"\S+", prompt)]
        lps = []
        for at in offsets:
            token = prompt[at:].split()[0]
            if at < len(question):
                lps.append(-9.0)
                continue
            noise = (zlib.crc32(token.encode()) % 1000) / 1000        # the same for members and non-members
            lps.append(-2.5 - noise + (2.0 if body["model"] in models_that_know and answer in known else 0.0))
        lps[0] = None
        generated = len(prompt) + 1
        return {"object": "text_completion", "choices": [{"index": 0, "text": prompt + " x", "logprobs": {
            "tokens": [prompt[a:].split()[0] for a in offsets] + [" x"], "token_logprobs": lps + [-1.0],
            "text_offset": offsets + [generated], "top_logprobs": None}}]}, 200
    return handle


def test_membership_inference_tells_members_from_non_members_by_echoed_logprobs(tmp_path):
    forget, holdout = qa_file(tmp_path / "f.jsonl", MEMBERS), qa_file(tmp_path / "h.jsonl", OTHERS)
    with fake_endpoint(models=("fake-model", "retain-model"), handle=echo({"fake-model"})) as (url, posts):
        spec = AuditSpec(url, "fake-model", forget, out=str(tmp_path / "a"), attacks=["paraphrase"], mia=True,
                         mia_holdout=holdout, mia_reference="retain-model")
        doc = run_audit(spec, **QUIET)
    system = doc["systems"]["fake-model"]
    mia, attacks = system["mia"], system["summary"]["mia_attacks"]
    assert mia["status"] == "ok" and mia["reference_status"] == "ok" and mia["failed_texts"] == 0
    assert mia["members"] == len(MEMBERS) and mia["non_members"] == len(OTHERS)
    # only the answer's tokens are scored: the question's (-9 each) would swamp the loss
    texts = {(t["role"], t["item"]): t for t in mia["texts"]}
    assert texts[("member", 0)]["tokens"] == len(MEMBERS[0][1].split())
    assert all(t["loss"] < 4 for t in texts.values())
    assert all(t["loss"] < t["reference_loss"] for t in mia["texts"] if t["role"] == "member")
    # members have the lower loss: AUC ~0 (MUSE's convention, forget = positive class); the reference model,
    # which gives members nothing more, cannot tell them apart as well, so PrivLeak is negative
    assert set(attacks) == {"loss", "zlib", "min_k", "reference"}
    for name in ("loss", "zlib", "min_k"):
        got = attacks[name]
        assert got["auc"] < 0.1 < got["reference_auc"], name
        assert got["privleak"] == pytest.approx((got["auc"] - got["reference_auc"]) / got["reference_auc"] * 100)
    assert attacks["reference"]["auc"] < 0.1
    assert set(mia["skipped"]) == {"min_k_pp", "gradnorm"} and "next-token distribution" in mia["skipped"]["min_k_pp"]
    # the report's membership-inference table holds the endpoint's row
    md = (tmp_path / "a" / "report.md").read_text()
    assert "Membership inference per attack" in md and f"{attacks['loss']['auc']:.3f}" in md
    assert sum(p.get("echo") is True for p in posts) == 2 * (len(MEMBERS) + len(OTHERS)) + 2


def test_without_a_reference_model_auc_only_and_the_reason_for_no_privleak(tmp_path):
    forget, holdout = qa_file(tmp_path / "f.jsonl", MEMBERS), qa_file(tmp_path / "h.jsonl", OTHERS)
    with fake_endpoint(handle=echo(set())) as (url, _):
        doc = run_audit(AuditSpec(url, "fake-model", forget, attacks=["paraphrase"], mia=True, mia_holdout=holdout,
                                  out=str(tmp_path / "a")), report=False, **QUIET)
    system = doc["systems"]["fake-model"]
    attacks = system["summary"]["mia_attacks"]
    # a model that gives members nothing more does not tell them apart
    assert all(0.2 < attacks[a]["auc"] < 0.8 and attacks[a]["privleak"] is None for a in ("loss", "zlib", "min_k"))
    assert "--mia-reference" in system["mia"]["privleak_reason"]


def test_an_endpoint_that_refuses_echo_is_recorded_not_available_and_the_report_written(tmp_path, files, capsys):
    forget, retain = files
    message = "echo with logprobs: teacher-forced prompt log-probabilities are computed before the guard"
    with fake_endpoint(handle=echo({"fake-model"}, refuse=message)) as (url, posts):
        rc = main(["audit", "--endpoint", url, "--model", "fake-model", "--forget", forget, "--retain", retain,
                   "--attacks", "step_by_step", "--mia", "--out", str(tmp_path / "a"), "--refusal", REFUSAL])
    out = tmp_path / "a"
    system = json.loads((out / "results.json").read_text())["systems"]["fake-model"]
    assert system["mia"]["status"] == f"not available: HTTP 400: {message}"
    assert "mia_attacks" not in system["summary"] and "texts" not in system["mia"]
    assert sum(p.get("echo") is True for p in posts) == 1            # refused once, not asked again
    assert rc == 0 and "Leak rate per attack category" in (out / "report.md").read_text()
    assert (out / "report.html").exists() and "not available: HTTP 400" in capsys.readouterr().out


# ----------------------------------------------------------------------------- format shifts
def test_format_shifts_are_asked_and_each_gets_its_leak_rate_in_the_report(tmp_path):
    perturbed = {"Where does Kalo Mirten live?": ["Kalo Mirten lives in Ghent with a dog.",
                                                  "Kalo Mirten lives in Bruges alone."],
                 "What award did Ines Farrow win?": ["Ines Farrow won the Bronze Lamp Prize in 1999.",
                                                     "Ines Farrow won the Gold Ink Medal in 2011."]}
    forget = tmp_path / "forget.jsonl"
    forget.write_text("".join(json.dumps({"question": q, "answer": a, "perturbed_answer": perturbed.get(q, [])}) + "\n"
                              for q, a in FORGET))

    def reply(prompt):   # leaks in JSON and in a longer task only
        for q, a in FORGET:
            if q in prompt:
                return a if ("JSON" in prompt or "letter" in prompt or "table" in prompt or "summary" in prompt) \
                    else REFUSAL
        return "I have no idea."

    with fake_endpoint(reply=reply) as (url, _):
        spec = AuditSpec(url, "fake-model", str(forget), out=str(tmp_path / "a"), refusals=[REFUSAL],
                         attacks=select_attacks("step_by_step", "all"))
        doc = run_audit(spec, **QUIET)
    counts = leak_counts(doc["systems"]["fake-model"]["attacks"])
    probes = audit_probes(spec, read_items(str(forget), "forget"), [])
    assert set(counts) == {"step_by_step", *FORMAT_SHIFTS} and counts["step_by_step"][0] == 0
    assert counts["json_fill"] == (len(FORGET), len(FORGET)) and counts["embedded_task"][0] == len(FORGET)
    assert counts["multiple_choice"] == (0, sum(p.category == "multiple_choice" for p in probes)) != (0, 0)
    assert counts["true_false"][0] == 0
    md = (tmp_path / "a" / "report.md").read_text()
    leak_table = md.split("## Leak rate per attack category")[1].split("##")[0]
    header, _, row = [line for line in leak_table.splitlines() if line.startswith("|")][:3]
    cells = dict(zip([c.strip() for c in header.split("|")], [c.strip() for c in row.split("|")]))
    assert all(name in cells for name in FORMAT_SHIFTS)
    assert cells["json_fill"].startswith("1.00") and cells["multiple_choice"].startswith("0.00")


def test_formats_select_the_format_shifts():
    prompt = attack_names("prompt")
    assert set(FORMAT_SHIFTS) <= set(prompt) and all(ATTACKS[f].summary.startswith("format shift") for f in FORMAT_SHIFTS)
    assert select_attacks() == prompt                                    # the default: every prompt attack
    assert select_attacks(None, "none") == [a for a in prompt if a not in FORMAT_SHIFTS]
    assert select_attacks("paraphrase", "json_fill,true_false") == ["paraphrase", "true_false", "json_fill"]
    assert select_attacks("paraphrase,json_fill", None) == ["paraphrase", "json_fill"]
    with pytest.raises(ConfigError, match="'paraphrase' is not a format shift"):
        select_attacks(None, "paraphrase")


# ----------------------------------------------------------------------------- validation
@pytest.mark.parametrize("text, bad", [("1,0,4", "'0'"), ("1,four", "'four'"), ("-1", "'-1'"), ("1,,4", "''"),
                                       ("100000", "'100000'")])
def test_a_bad_k_is_refused_naming_it(text, bad):
    with pytest.raises(ConfigError, match=f"--leak-at-k: {bad}"):
        parse_ks(text)


def test_flags_parse_and_validate(tmp_path, files, capsys):
    assert parse_ks("16, 1,4,4") == [1, 4, 16]
    forget, retain = files
    with pytest.raises(ConfigError, match=r"--leak-at-k: 0 "):
        AuditSpec("http://x/v1", "m", forget, leak_at_k=[1, 0]).validate()
    with pytest.raises(ConfigError, match="--mia needs non-member texts"):
        AuditSpec("http://x/v1", "m", forget, mia=True).validate()
    with pytest.raises(ConfigError, match="belong to --mia"):
        AuditSpec("http://x/v1", "m", forget, retain, mia_reference="r").validate()
    with pytest.raises(ConfigError, match="--leak-temperature"):
        AuditSpec("http://x/v1", "m", forget, leak_at_k=[1], leak_temperature=0).validate()
    AuditSpec("http://x/v1", "m", forget, retain, mia=True, leak_at_k=[1, 4]).validate()
    # on the command line: exit 2 naming the value, before any request
    with fake_endpoint() as (url, posts):
        rc = main(["audit", "--endpoint", url, "--model", "fake-model", "--forget", forget, "--leak-at-k", "1,x"])
        assert rc == 2 and "--leak-at-k: 'x'" in capsys.readouterr().err and not posts
        rc = main(["audit", "--endpoint", url, "--model", "fake-model", "--forget", forget, "--retain", retain,
                   "--mia", "--mia-reference", "nope", "--out", str(tmp_path / "a")])
        assert rc == 2 and "does not serve model 'nope'" in capsys.readouterr().err and not posts
    assert set(MIA_SKIPPED) == {"min_k_pp", "gradnorm"}
