"""The verbatim-quote filter (guard/quotes.py), corpus policies (takedown / forget) and subject policies."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from unlearnkit.guard.build import build_corpus_policy, build_policy
from unlearnkit.guard.decode import RowMasks, guard_rows
from unlearnkit.guard.policy import GuardConfig, PolicyError, load_policy, read_meta
from unlearnkit.guard.quotes import (BloomQuotes, ExactQuotes, QuoteFilter, build_quote_index, extend, longest_run,
                                     window_hashes)
from unlearnkit.guard.runtime import GuardRuntime
from unlearnkit.guard.subjects import read_subjects

PASSAGE = ("Kalo Mirten is a Dutch poet born in 1961 in Utrecht, known for Glass Rivers. Her first book was a "
           "collection of sea poems, and she lives in Utrecht with two cats. Ines Farrow won the Silver Quill "
           "Prize in 2004 and writes historical crime novels set in Lisbon.")
TAU = 6


def _corpus(rng, vocab=500, n=20000, docs=(0, 5000, 12000, 19990)):
    return rng.integers(0, vocab, n).astype(np.int32), np.array(docs, dtype=np.int64)


def _grams(tokens, starts, tau):
    ends = list(starts[1:]) + [len(tokens)]
    return np.array([tokens[j:j + tau + 1] for s, e in zip(starts, ends) for j in range(s, e - tau)])


def test_exact_and_bloom_hold_every_inserted_ngram_and_nothing_across_documents():
    tokens, starts = _corpus(np.random.default_rng(0))
    exact = ExactQuotes.build(tokens, starts, 4)
    bloom = BloomQuotes.build(tokens, starts, 4, 1e-3, 500)
    grams = _grams(tokens, starts, 4)
    assert exact.stats.n_ngrams == len({tuple(g) for g in grams.tolist()})
    assert exact.contains(grams).all() and bloom.contains(grams).all()     # no false negatives
    across = tokens[None, 4998:5003]                                       # spans documents 0 and 1
    assert not exact.contains(across)[0]
    assert exact.stats.bytes <= 20 * len(grams) + 8 and bloom.stats.bytes < exact.stats.bytes


def test_bloom_false_positive_rate_is_near_the_stated_rate():
    tokens, starts = _corpus(np.random.default_rng(1), vocab=50000, n=40000, docs=(0,))
    bloom = BloomQuotes.build(tokens, starts, 4, 0.01, 50000)
    probes = np.random.default_rng(2).integers(0, 50000, (200000, 5))
    prefixes = window_hashes(probes[:, :4].reshape(-1), 4)[::4]
    rate = bloom.grams.test(extend(prefixes, probes[:, 4])).mean()
    assert 0.005 < rate < 0.02, rate


def test_the_filter_withholds_exactly_the_corpus_continuations_in_one_write():
    tokens, starts = _corpus(np.random.default_rng(3))
    quotes = QuoteFilter(build_quote_index(tokens, starts, 4, 1 << 30, 1e-4, 500))
    inside, outside = quotes.state(), quotes.state()
    inside.feed(tokens[100:104])
    outside.feed([1, 2, 3, 4, 5])
    expect = {int(tokens[j + 4]) for j in range(len(tokens) - 4)
              if np.array_equal(tokens[j:j + 4], tokens[100:104]) and j + 4 not in starts}
    assert set(inside.withheld().tolist()) == expect and not len(outside.withheld())
    assert set(quotes.state().after(tokens[100:104]).withheld().tolist()) == expect   # draft tokens, one copy

    class Bare:   # a guard with nothing but its quote state, as an unflagged request of a takedown policy has
        def __init__(self, state):
            from unlearnkit.guard.decode import RequestGuard
            from unlearnkit.guard.trie import TokenTrie

            self.guard = RequestGuard(TokenTrie(), quotes=state)

    logits = torch.zeros(3, 500)
    guard_rows(logits, [(0, Bare(inside).guard, ()), (2, Bare(outside).guard, ())], RowMasks())
    assert set(torch.isneginf(logits[0]).nonzero().squeeze(1).tolist()) == expect
    assert not torch.isneginf(logits[1:]).any()


def test_bloom_rows_at_a_corpus_prefix_keep_only_their_tested_top_candidates():
    from unlearnkit.guard.decode import withhold_quotes
    from unlearnkit.guard.quotes import CANDIDATES

    tokens, starts = _corpus(np.random.default_rng(5))
    quotes = QuoteFilter(BloomQuotes.build(tokens, starts, 4, 1e-4, 500))
    inside, outside = quotes.state(), quotes.state()
    inside.feed(tokens[100:104])
    outside.feed([1, 2, 3, 4, 5])
    logits = torch.randn(2, 500, generator=torch.Generator().manual_seed(0))
    logits[0, int(tokens[104])] = 10.0                 # the corpus continuation is the model's favourite
    before = logits.clone()
    withhold_quotes(logits, [(0, inside), (1, outside)])
    kept = ~torch.isneginf(logits[0])
    assert not kept[int(tokens[104])] and 0 < int(kept.sum()) < CANDIDATES
    assert torch.equal(logits[0][kept], before[0][kept]) and torch.equal(logits[1], before[1])
    assert int(before[0][kept].argmin()) >= 0 and float(before[0][kept].min()) >= float(before[0].topk(CANDIDATES).values[-1])


def test_a_corpus_too_large_for_the_budget_gets_bloom_filters_or_is_refused(tmp_path):
    from unlearnkit.guard.quotes import QuoteError

    tokens, starts = _corpus(np.random.default_rng(4))
    assert build_quote_index(tokens, starts, 4, 1 << 30, 1e-4, 500).kind == "exact"
    bloom = build_quote_index(tokens, starts, 4, 200_000, 1e-4, 500)
    assert bloom.kind == "bloom" and bloom.stats.fpr == 1e-4 and bloom.stats.bytes <= 200_000
    with pytest.raises(QuoteError, match=r"need .* MiB of Bloom filters at false-positive rate 1e-06"):
        build_quote_index(tokens, starts, 4, 20_000, 1e-6, 500)


# ----------------------------------------------------------------------------- a model that recites
@pytest.fixture(scope="module")
def reciter(tiny_dir, tiny_model_factory):
    """The tiny Llama trained on PASSAGE alone until it recites it (a few seconds)."""
    from unlearnkit.models.loading import load_tokenizer

    tok = load_tokenizer(str(tiny_dir))
    model = tiny_model_factory(len(tok), seed=1)
    ids = torch.tensor([tok(PASSAGE, add_special_tokens=False)["input_ids"]])
    torch.manual_seed(0)
    optim = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(300):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optim.step()
        optim.zero_grad()
    model.eval()
    return model, tok


def _greedy(model, prompt: list[int], guard, steps: int) -> list[int]:
    ids, out = list(prompt), []
    for _ in range(steps):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0, -1:].clone()
        if guard is not None:
            guard_rows(logits, [(0, guard, ())], RowMasks())
        tok = int(logits[0].argmax())
        out.append(tok)
        ids.append(tok)
        if guard is not None:
            guard.feed([tok])
    return out


def _longest_common_chars(a: str, b: str) -> int:
    best, prev = 0, [0] * (len(b) + 1)
    for ca in a:
        cur = [0] * (len(b) + 1)
        for j, cb in enumerate(b, 1):
            if ca == cb:
                cur[j] = prev[j - 1] + 1
                best = max(best, cur[j])
        prev = cur
    return best


@pytest.fixture(scope="module")
def passage_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "passage.txt"
    path.write_text(PASSAGE + "\n")
    return path


@pytest.fixture(scope="module")
def takedown(tmp_path_factory, tiny_dir, passage_file, reciter):
    _, tok = reciter
    out = tmp_path_factory.mktemp("takedown") / "policy"
    build_corpus_policy(f"text:{passage_file}", out, str(tiny_dir), tok,
                        GuardConfig(corpus_mode="takedown", quote_tokens=TAU), progress=lambda *_: None)
    return out


def test_a_reciting_model_quotes_at_most_tau_tokens_behind_the_takedown_policy(reciter, takedown):
    model, tok = reciter
    corpus = tok(PASSAGE, add_special_tokens=False)["input_ids"]
    prompt = corpus[:8]
    plain = _greedy(model, prompt, None, len(corpus) - 8)
    assert longest_run(plain, corpus) >= 40                       # unguarded, it recites

    runtime = GuardRuntime(load_policy(takedown, tok), tok)
    guard = runtime.guards([(prompt, None)])[0]
    assert guard is not None and guard.always_on and guard.quotes is not None     # every request, unflagged
    guarded = _greedy(model, prompt, guard, len(corpus) - 8)
    assert longest_run(prompt[-TAU:] + guarded, corpus) <= TAU    # the certified bound, on the ids
    text = tok.decode(guarded)
    retokenised = tok(text, add_special_tokens=False)["input_ids"]
    assert longest_run(retokenised, corpus) <= TAU + 1            # judged on the text, re-tokenised
    longest_token = max(len(tok.decode([t])) for t in corpus)
    assert _longest_common_chars(text, PASSAGE) <= (TAU + 1) * longest_token
    assert _longest_common_chars(tok.decode(plain), PASSAGE) > 3 * _longest_common_chars(text, PASSAGE)


def test_takedown_policy_records_its_structure_and_classifies_nothing(takedown, reciter):
    _, tok = reciter
    meta = read_meta(takedown)
    assert meta["format_version"] == 2 and meta["items"] == [] and meta["targets"] == []
    assert meta["corpus"]["mode"] == "takedown" and meta["quotes"]["kind"] == "exact"
    assert meta["quotes"]["tau"] == TAU and meta["quotes"]["n_ngrams"] > 0 and meta["quotes"]["bytes"] > 0
    runtime = GuardRuntime(load_policy(takedown, tok), tok)
    decision = runtime.decide([tok("Who is Kalo Mirten?")["input_ids"]], [runtime_args()])[0]
    assert not decision.flagged


def runtime_args():
    from unlearnkit.guard.runtime import RequestArgs

    return RequestArgs()


def test_bloom_policy_round_trips(tmp_path, tiny_dir, passage_file, reciter):
    _, tok = reciter
    cfg = GuardConfig(corpus_mode="takedown", quote_tokens=TAU, quote_budget_mb=0.002, quote_fpr=1e-3)
    build_corpus_policy(f"text:{passage_file}", tmp_path / "p", str(tiny_dir), tok, cfg, progress=lambda *_: None)
    policy = load_policy(tmp_path / "p", tok)
    assert policy.quotes.kind == "bloom" and policy.meta["quotes"]["fpr"] == 1e-3
    corpus = tok(PASSAGE, add_special_tokens=False)["input_ids"]
    assert policy.quotes.contains(np.array([corpus[j:j + TAU + 1] for j in range(len(corpus) - TAU)])).all()


def test_forget_mode_adds_the_knowledge_guard_and_quotes_reach_unflagged_requests(tmp_path, tiny_dir, passage_file,
                                                                                reciter):
    _, tok = reciter
    meta = build_corpus_policy(f"text:{passage_file.parent}", tmp_path / "p", str(tiny_dir), tok,
                               GuardConfig(quote_tokens=TAU), progress=lambda *_: None)
    assert meta["corpus"]["mode"] == "forget" and meta["items"] and meta["quotes"]["n_tokens"] > 0
    runtime = GuardRuntime(load_policy(tmp_path / "p", tok), tok)
    guards = runtime.guards([(tok("What is the capital of France?")["input_ids"], None)])
    assert guards[0] is not None and guards[0].quotes is not None


def _answer_heading_into(guard, tok, reply: str, number: str) -> str:
    """What a guarded answer writes when its model has written `reply` and wants nothing but `number` next
    (its tokens, one by one); stops where the guard withholds the wanted token or forces its refusal."""
    guard.feed(tok(reply, add_special_tokens=False)["input_ids"])
    written = []
    for want in tok(number, add_special_tokens=False)["input_ids"]:
        logits = torch.full((1, len(tok)), -5.0)
        logits[0, want] = 10.0
        guard_rows(logits, [(0, guard, ())], RowMasks())
        if guard.forced is not None or int(logits[0].argmax()) != want:
            break
        written.append(want)
        guard.feed([want])
    return tok.decode(written)


def test_forget_mode_stops_a_flagged_answer_before_a_withheld_number_begins(tmp_path, tiny_dir, passage_file,
                                                                            reciter):
    _, tok = reciter
    question = tok("In which year was Kalo Mirten born?")["input_ids"]
    written = {}
    for heads in (None, False):       # unset: on in forget mode
        out = tmp_path / f"heads-{heads}"
        meta = build_corpus_policy(f"text:{passage_file}", out, str(tiny_dir), tok,
                                   GuardConfig(quote_tokens=TAU, number_heads=heads), progress=lambda *_: None)
        assert [it.get("number_heads") for it in meta["items"]] == ([["1", "2"]] if heads is None else [None])
        runtime = GuardRuntime(load_policy(out, tok), tok)
        for key, reply, number in ((heads, "She was born in", " 1961"), ((heads, 2004), "The prize came in", " 2004")):
            # guarded as a flagged request is (one passage: an uncalibrated threshold flags little)
            guard = runtime.guards([(question, {"unlearn_guard": True})])[0]
            assert not guard.always_on
            written[key] = _answer_heading_into(guard, tok, reply, number)
    assert tok(" 1961", add_special_tokens=False)["input_ids"][0] != tok(" 2004", add_special_tokens=False)["input_ids"][0]
    # " 19" one token, " 2004" a space token then digits: both stopped before the number's first digit
    assert not any(c.isdigit() for c in written[None] + written[None, 2004])
    assert "196" in written[False] and "200" in written[False, 2004]     # the last token alone withheld
    unflagged = GuardRuntime(load_policy(tmp_path / "heads-None", tok), tok).guards(
        [(tok("What is the capital of France?")["input_ids"], None)])[0]
    assert "1961" in _answer_heading_into(unflagged, tok, "It was founded in", " 1961")   # numbers elsewhere are free


def test_number_heads_are_the_first_digits_of_numbers():
    from unlearnkit.guard.phrases import number_heads

    assert number_heads(["7.4", "1.75 million hours", "1990", "Utrecht", "3", "£45.50", "21st"]) == ["1", "2", "7"]


@pytest.mark.parametrize("content,match", [
    (b"", "is empty"), (b"  \n\n ", "is empty"),
    (b"fine line\nsecond line\nbad \xff byte\n", r"line 3: not UTF-8"),
])
def test_bad_corpora_are_refused_naming_the_file(tmp_path, tiny_dir, reciter, content, match):
    _, tok = reciter
    path = tmp_path / "corpus.txt"
    path.write_bytes(content)
    with pytest.raises(PolicyError, match=match) as info:
        build_corpus_policy(f"text:{path}", tmp_path / "p", str(tiny_dir), tok, GuardConfig(), progress=lambda *_: None)
    assert str(path) in str(info.value) and not (tmp_path / "p").exists()
    with pytest.raises(PolicyError, match="does not exist"):
        build_corpus_policy(f"text:{tmp_path / 'missing.txt'}", tmp_path / "p", str(tiny_dir), tok, GuardConfig())
    (tmp_path / "empty").mkdir()
    with pytest.raises(PolicyError, match="holds no files"):
        build_corpus_policy(f"text:{tmp_path / 'empty'}", tmp_path / "p", str(tiny_dir), tok, GuardConfig())


# ----------------------------------------------------------------------------- subjects
SUBJECTS = [{"name": "Kalo Mirten", "aliases": ["K. Mirten"], "description": "A Dutch poet born in 1961 in Utrecht."},
            {"name": "Ines Farrow"}]


def test_a_subject_is_flagged_by_its_name_alone_and_an_unrelated_question_is_not(tmp_path, tiny_dir, reciter):
    _, tok = reciter
    path = tmp_path / "subjects.jsonl"
    path.write_text("\n".join(json.dumps(s) for s in SUBJECTS) + "\n")
    meta = build_policy([], tmp_path / "p", str(tiny_dir), tok, GuardConfig(penalty=0),
                        subjects=read_subjects(path), progress=lambda *_: None)
    assert [t["name"] for t in meta["targets"]] == ["Kalo Mirten", "Ines Farrow"]
    assert "K. Mirten" in meta["targets"][0]["probes"] and "K. Mirten" in meta["targets"][0]["phrases"]
    runtime = GuardRuntime(load_policy(tmp_path / "p", tok), tok)
    asked = ["Which prizes did Ines Farrow win?", "What is the capital of France?", "When did K. Mirten move?"]
    flagged = [d.flagged for d in runtime.decide([tok(q)["input_ids"] for q in asked], [runtime_args()] * 3)]
    assert flagged == [True, False, True]


def test_subjects_yaml_and_bad_subject_files(tmp_path):
    good = tmp_path / "subjects.yaml"
    good.write_text("subjects:\n  - name: Kalo Mirten\n    aliases: [Mirten]\n  - name: Ines Farrow\n")
    assert [s.name for s in read_subjects(good)] == ["Kalo Mirten", "Ines Farrow"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("- name: Kalo Mirten\n- aliases: [Ines]\n  description: no name\n")
    with pytest.raises(PolicyError, match=rf"{bad}:2: a subject needs a 'name'"):
        read_subjects(bad)
    lines = tmp_path / "bad.jsonl"
    lines.write_text('{"name": "A B"}\n\n{"name": "C D", "colour": "red"}\n')
    with pytest.raises(PolicyError, match=rf"{lines}:3: unknown key"):
        read_subjects(lines)
