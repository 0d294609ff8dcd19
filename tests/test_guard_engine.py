"""The guard inside real vLLM engines: offline generation, and the OpenAI server started by
`unlearn serve --guard` (HTTP 400 for bad vllm_xargs, serving continues, streaming).

Each test runs on the tiny Llama model the tests build and, where it has been fetched
(`unlearn models fetch gemma3-270m`; tests never fetch), on the second model family: Gemma 3 270M,
a SentencePiece tokenizer with a 262k vocabulary and Gemma's turn format."""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from unlearnkit.guard.serve import free_port
from unlearnkit.models.catalog import model_dir
from unlearnkit.models.fetch import is_fetched

from tests.conftest import build_test_policy

pytest.importorskip("vllm")

SECOND_FAMILY = "gemma3-270m"
# read at collection, from the real cache (each test then gets an isolated one)
SECOND_FAMILY_DIR = model_dir(SECOND_FAMILY) if is_fetched(SECOND_FAMILY) else None


@dataclass(frozen=True)
class EngineCase:
    """A model family under test: the checkpoint that generates offline, the one served, and a
    policy built for their tokenizer."""

    generating: Path
    served: Path
    policy: Path


@pytest.fixture(scope="module", params=["tiny-llama", SECOND_FAMILY])
def case(request, tmp_path_factory, guard_forget_set) -> EngineCase:
    if request.param == "tiny-llama":
        return EngineCase(request.getfixturevalue("varied_model"), request.getfixturevalue("vllm_sized_model"),
                          request.getfixturevalue("tiny_policy"))
    if SECOND_FAMILY_DIR is None:
        pytest.skip(f"{SECOND_FAMILY} is not fetched (`unlearn models fetch {SECOND_FAMILY}`)")
    policy = build_test_policy(SECOND_FAMILY_DIR, tmp_path_factory.mktemp("guard-gemma") / "policy",
                               guard_forget_set)
    return EngineCase(SECOND_FAMILY_DIR, SECOND_FAMILY_DIR, policy)


@pytest.fixture(scope="module")
def varied_model(vllm_sized_model, tmp_path_factory):
    """vllm_sized_model with large random weights: a freshly initialised model answers every prompt
    with the same token, which would make "identical with and without the guard" trivially true."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path_factory.mktemp("varied")
    model = AutoModelForCausalLM.from_pretrained(vllm_sized_model)
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" not in name:
                param.normal_(0.0, 0.3)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(vllm_sized_model).save_pretrained(out)
    return out


def _prompts(tok, questions):
    from unlearnkit.data.formatting import prompt_text

    return [tok(prompt_text(tok, q), add_special_tokens=False)["input_ids"] for q in questions]


@pytest.mark.slow
def test_unflagged_requests_are_token_identical_and_flagged_ones_never_complete_a_sequence(case):
    from unlearnkit.evaluation.vllm_generate import run_vllm
    from unlearnkit.guard.policy import load_policy
    from unlearnkit.guard.runtime import FQCN, POLICY_ENV, GuardRuntime, RequestArgs
    from unlearnkit.models.loading import load_tokenizer

    tok = load_tokenizer(str(case.generating))
    questions = ["Where was Kalo Mirten born?", "What prize did Ines Farrow win?", "What is the capital of France?",
                 "Who painted the Mona Lisa?", "How do vaccines work?", "What is the largest ocean?"]
    ids = _prompts(tok, questions)
    runtime = GuardRuntime(load_policy(case.policy, tok), tok)
    flagged = [d.flagged for d in runtime.decide(ids, [RequestArgs()] * len(ids))]
    assert flagged == [True, True, False, False, False, False]
    req = {"prompt_token_ids": ids, "max_tokens": 24, "dtype": "float32", "max_model_len": 256}
    plain = run_vllm(str(case.generating), req)["token_ids"]
    assert len({tuple(p) for p in plain}) == len(plain)          # the model says different things
    # one unflagged request adds, through its own arguments, a token its plain answer uses as a target
    def usable(t):
        text = tok.decode([t])
        return text.strip().isalpha() and tok(text, add_special_tokens=False)["input_ids"] == [t]
    target_n, first = next((n, t) for n in (5, 4, 3, 2) for t in plain[n] if usable(t))
    extra = [None] * len(ids)
    extra[target_n] = {"unlearn_targets": [tok.decode([first])]}
    guarded = run_vllm(str(case.generating), {**req, "logits_processors": [FQCN], "extra_args": extra},
                       env={POLICY_ENV: str(case.policy)})["token_ids"]
    for n in (2, 3, 4, 5):
        if n != target_n:
            assert guarded[n] == plain[n], questions[n]
    assert first in plain[target_n] and first not in guarded[target_n]
    assert guarded[0] != plain[0] or guarded[1] != plain[1]      # the guard changed a flagged answer
    # replay the guard: no flagged output ever emitted a token its guard blocked at that step
    guards = runtime.guards([(p, e) for p, e in zip(ids, extra)])
    for n in (0, 1, target_n):
        g = guards[n]
        for tok_id in guarded[n]:
            assert tok_id not in g.trie.blocked(g.live), (questions[n], tok_id)
            g.feed([tok_id])


def _post(port, path, body):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    resp = conn.getresponse()
    data = resp.read().decode()
    conn.close()
    return resp.status, data


@pytest.mark.slow
def test_server_refuses_loosening_args_with_400_and_keeps_serving(case, cli_server):
    port = free_port()
    with cli_server(["serve", "--model", case.served, "--guard", case.policy, "--port", port, "--name", "tiny",
                     "--dtype", "float32", "--max-model-len", "256"], port, timeout=300):
        chat = {"model": "tiny", "max_tokens": 8, "temperature": 0,
                "messages": [{"role": "user", "content": "Where was Kalo Mirten born?"}]}
        for xargs, words in [({"unlearn_guard": False}, "switch"), ({"unlearn_threshold": 1.5}, "between"),
                             ({"unlearn_off": 1}, "unknown"), ({"unlearn_targets": [1, 2]}, "list of strings")]:
            status, body = _post(port, "/v1/chat/completions", {**chat, "vllm_xargs": xargs})
            assert status == 400 and words in body, (xargs, status, body[:300])
        status, _ = _post(port, "/v1/chat/completions", {**chat, "vllm_xargs": {"unlearn_threshold": 0.999}})
        assert status == 200                                   # would loosen: clamped to the policy's, not refused
        status, body = _post(port, "/v1/chat/completions", {**chat, "vllm_xargs": {"unlearn_targets": ["Paris"]}})
        assert status == 200 and json.loads(body)["choices"][0]["message"]["content"] is not None
        status, body = _post(port, "/v1/completions", {"model": "tiny", "prompt": "Kalo Mirten", "max_tokens": 6,
                                                       "stream": True})
        assert status == 200 and body.rstrip().endswith("data: [DONE]")
