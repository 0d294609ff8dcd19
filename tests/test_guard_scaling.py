"""The guard's many-target structures give the same answers as the plain scans they replace:
collapsed-name search, probe lists per item, background checks, and the names check kept beside a
request's own trie / text matcher instead of merged into them."""

from __future__ import annotations

import functools
import random

import pytest

from unlearnkit.guard import disguise
from unlearnkit.guard.classifier import MIN_COLLAPSED, CollapsedIndex, PromptClassifier
from unlearnkit.guard.phrases import Background, MentionIndex, distinctive_parts, mentions
from unlearnkit.guard.runtime import RequestArgs
from unlearnkit.guard.textmatch import TextMatcher, TokenTexts
from unlearnkit.guard.trie import TokenTrie
from unlearnkit.guard.union import MatcherUnion, TrieUnion

NAMES = ["Kalo Mirten", "Ines Farrow", "Basil Mahfouz Al-Kuwaiti", "Zed Vell", "Orla Quint", "Tamsin Okafor"]


def _random_text(rng: random.Random, words: list[str], n: int = 12) -> str:
    return " ".join(rng.choice(words) for _ in range(n))


def test_collapsed_index_finds_what_the_scan_finds():
    rng = random.Random(0)
    keys = [(disguise.collapsed(n), t) for t, n in enumerate(NAMES) if len(disguise.collapsed(n)) >= MIN_COLLAPSED]
    index = CollapsedIndex(keys)
    words = ["kalo", "mirten", "netrim", "olak", "ines", "farrow", "worraf", "zed", "the", "a", "tamsin", "okafor"]
    hits = 0
    for _ in range(400):
        text = disguise.collapsed(_random_text(rng, words))
        naive = {t for k, t in keys if k in text or k[::-1] in text}
        assert index.find(text) == naive
        hits += bool(naive)
    assert hits > 20                              # forwards and backwards names were there to find
    assert not CollapsedIndex([])


def test_mention_index_and_background_answer_like_mentions():
    rng = random.Random(1)
    probe_lists = [[n, n.split()[-1]] for n in NAMES] + [["Al-Kuwaiti's"], ["Mirten  Kalo"]]
    index = MentionIndex(probe_lists)
    words = ["Kalo", "Mirten", "mirten,", "Al-Kuwaiti's", "Al-Kuwaiti", "Zed", "Vell.", "the", "of", "Farrow's",
             "Okafor-Quint", "Mirten  Kalo", "xMirten"]
    texts = [_random_text(rng, words, 8) for _ in range(300)]
    for text in texts:
        assert index.find(text) == [k for k, probes in enumerate(probe_lists) if mentions(text, probes)]
    background = texts[:40]
    known = Background(background)
    for phrase in ["Mirten", "Kalo Mirten", "Vell", "Al-Kuwaiti", "Okafor", "Quint", "Tamsin", "Zzz", "xMirten"]:
        assert known.mentions(phrase) == any(mentions(b, [phrase]) for b in background), phrase
    for name in NAMES:
        assert distinctive_parts(name, known) == distinctive_parts(name, background)


def _reference_named(classifier: PromptClassifier, text: str) -> set[int]:
    """PromptClassifier.named as it was: a scan over every collapsed probe."""
    from unlearnkit.guard.classifier import collapsed_names

    found: set = set()
    for view in disguise.lexical_views(text):
        found |= classifier.probes.find(view)
    views = disguise.collapsed_views(text)
    for key, target in collapsed_names(classifier.policy.targets):
        if target not in found and any(key in v or key[::-1] in v for v in views):
            found.add(target)
    return found


PROMPTS = ["Where was Kalo Mirten born?", "Tell me about K-a-l-o M.i.r.t.e.n please", "netrimolak", "Who is Ines Farrow?",
           "What is the capital of France?", "I n e s F a r r o w", "Who wrote Harry Potter?", "kal0 m1rten's books"]


@pytest.fixture(scope="module")
def runtime(tiny_policy, tiny_dir):
    from unlearnkit.guard.policy import load_policy
    from unlearnkit.guard.runtime import GuardRuntime
    from unlearnkit.models.loading import load_tokenizer

    tok = load_tokenizer(str(tiny_dir))
    return GuardRuntime(load_policy(tiny_policy, tok), tok)


def test_decisions_and_target_items_are_those_of_the_scans(runtime):
    classifier = runtime.classifier
    n_items = len(runtime.policy.items)
    assert classifier.target_items == [tuple(i for i in range(n_items) if t in classifier.item_targets[i])
                                       for t in range(len(runtime.policy.targets))]
    named = [classifier.named(p) for p in PROMPTS]
    assert named == [_reference_named(classifier, p) for p in PROMPTS]
    assert sum(map(bool, named)) >= 4              # the lexical test fired, spelled-out names included
    tok = runtime.tokenizer
    ids = [tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=True)
           for p in PROMPTS]
    ids = [list(i["input_ids"]) if isinstance(i, dict) or hasattr(i, "keys") else list(i) for i in ids]
    from unlearnkit.guard.runtime import RequestArgs

    decisions = runtime.decide(ids, [RequestArgs()] * len(ids))
    assert [d.flagged for d in decisions][:4] == [True, True, True, True]
    assert not decisions[4].flagged


def _merged(runtime, items, targets):
    """The request's trie and matcher as they were built before: its phrases and the names merged."""
    from unlearnkit.guard.runtime import _text_matcher

    policy = runtime.policy
    trie = TokenTrie([s for i in items for s in policy.item_sequences[i]] + [s for t in targets for s in policy.target_sequences[t]]
                     + list(runtime.name_sequences))
    phrases = [p for i in items for p in policy.items[i]["phrases"]]
    phrases += [p for t in targets for p in policy.targets[t].get("phrases", [policy.targets[t]["name"]])]
    phrases += runtime._near_misses(targets)        # strict mode: the names' one-edit misspellings too
    return trie, _text_matcher(phrases + runtime.name_probes, runtime.token_texts)


def test_a_flagged_guard_blocks_what_the_merged_structures_blocked(runtime):
    from unlearnkit.guard.runtime import RequestArgs

    tok = runtime.tokenizer
    prompt = tok.apply_chat_template([{"role": "user", "content": "Where was Kalo Mirten born?"}],
                                     add_generation_prompt=True, tokenize=False)
    decision = runtime.decide([tok(prompt, add_special_tokens=False)["input_ids"]], [RequestArgs()])[0]
    assert decision.flagged and decision.targets
    guard = runtime.guard_for(decision, RequestArgs())
    assert isinstance(guard.trie, TrieUnion) and isinstance(guard.text, MatcherUnion)
    trie, matcher = _merged(runtime, decision.items, decision.targets)
    rng = random.Random(2)
    answers = [f"{it['answer']} Ines Farrow and Kalo Mirten." for it in runtime.policy.items]
    live, state = frozenset(), matcher.start
    ulive, ustate = frozenset(), guard.text.start
    checked = 0
    for answer in rng.sample(answers, min(6, len(answers))):
        for t in tok(answer, add_special_tokens=False)["input_ids"]:
            assert guard.trie.blocked(ulive) == trie.blocked(live)
            assert guard.text.blocked(ustate) == matcher.blocked(state)
            assert guard.text.blocked_index(ustate).tolist() == sorted(matcher.blocked(state))
            checked += bool(trie.blocked(live) - trie.blocked(frozenset()))
            live, ulive = trie.advance(live, t), guard.trie.advance(ulive, t)
            state, ustate = matcher.advance_tokens(state, [t]), guard.text.advance_tokens(ustate, [t])
    assert checked > 0                             # some steps were inside a forbidden phrase


def test_unions_refuse_mismatched_texts(tiny_tokenizer_factory):
    tok = tiny_tokenizer_factory()
    a, b = TokenTexts(tok), TokenTexts(tok)
    with pytest.raises(ValueError, match="same token texts"):
        MatcherUnion(TextMatcher(["Kalo"], a), TextMatcher(["Mirten"], b))
    union = TrieUnion(TokenTrie([[1, 2]]), TokenTrie([[3], [1, 4]]))
    live = union.advance(frozenset(), 1)
    assert union.blocked(live) == {2, 3, 4} and len(union) == 3
    assert union.blocked_index(live).tolist() == [2, 3, 4]


def test_text_matcher_blocked_is_unchanged_by_the_start_state_cache(tiny_tokenizer_factory):
    """TextMatcher.blocked gathers the start state's phrases once: every state still blocks what a
    walk of its whole failure chain gives."""
    tok = tiny_tokenizer_factory()
    texts = TokenTexts(tok)
    matcher = TextMatcher(["Kalo Mirten", "Mirten", "Ines", "Farrow", "born in"], texts)

    def walk(state):
        found, node = set(matcher.inside), state
        while True:
            for rest in matcher.rest[node]:
                found.update(texts.starting_with(rest))
            if node == 0:
                return found
            node = matcher.fail[node]
    for state in range(len(matcher.goto)):
        assert matcher.blocked(state) == walk(state)


def test_cached_moves_equal_walking_each_token(tiny_tokenizer_factory):
    """The matcher's (node, token) cache and the trie's empty-live shortcut move exactly as walking every
    token's text / every live node does, through names, byte-split characters and ordinary text."""
    from unlearnkit.guard.trie import ROOT, token_sequences

    tok = tiny_tokenizer_factory()
    texts = TokenTexts(tok)
    phrases = ["Kalo Mirten", "Mirten", "Ines Farrow", "born in"]
    matcher, trie = TextMatcher(phrases, texts), TokenTrie(token_sequences(tok, phrases))
    stream = tok(" Kalo Mirten was born in Ünterdörf; Ines Farrow 𝐊𝐚𝐥𝐨 Mirten, Kalo Mir", add_special_tokens=False)["input_ids"]
    rng = random.Random(0)
    for _ in range(30):
        tokens = stream + [rng.randrange(len(texts.text)) for _ in range(40)] + stream
        if rng.random() < 0.5:
            rng.shuffle(tokens)
        state, walked = matcher.start, matcher.start
        live, walked_live = frozenset(), frozenset()
        for t in tokens:
            state = matcher.advance_tokens(state, [t])
            node, pending = matcher.unpack(walked)
            if pending or t in texts.opening:
                text, pending = texts.continued(pending, t)
            else:
                text = texts.text[t]
            walked = matcher.pack(matcher.advance(node, text), pending)
            assert state == walked
            live = trie.advance(live, t)
            walked_live = frozenset(trie._children[n][t] for n in walked_live | {ROOT}
                                    if t in trie._children[n] and trie._children[trie._children[n][t]])
            assert live == walked_live
    assert matcher._moves                      # the cache was used


def test_warm_up_loads_the_embedder_before_any_request(runtime, monkeypatch):
    """An engine warms its runtime up at start: the first admitted requests must not wait for the
    sentence embedder to load (about half a second on 2 cores)."""
    from unlearnkit.guard import embedder as E

    loads = []
    real = E._load.__wrapped__
    fresh = functools.lru_cache(maxsize=2)(lambda device, precision: loads.append(device) or real(device, precision))
    monkeypatch.setattr(E, "_load", fresh)
    runtime.warm_up(max_targets=1)
    assert loads == ["cpu"]
    runtime.decide([[5, 17, 42]], [RequestArgs()])
    assert loads == ["cpu"]   # the request found it loaded


def test_differences_block_what_a_structure_without_the_exempt_phrases_blocks(tiny_dir):
    from unlearnkit.guard.trie import token_sequences
    from unlearnkit.guard.union import MatcherDifference, TrieDifference
    from unlearnkit.models.loading import load_tokenizer

    tok = load_tokenizer(str(tiny_dir))
    texts = TokenTexts(tok)
    every, exempt = ["Kalo Mirten", "Ines Farrow", "Utrecht"], ["Ines Farrow"]
    rest = [p for p in every if p not in exempt]
    trie = TrieDifference(TokenTrie(token_sequences(tok, every)), TokenTrie(token_sequences(tok, exempt)))
    plain_trie = TokenTrie(token_sequences(tok, rest))
    matcher = MatcherDifference(TextMatcher(every, texts), TextMatcher(exempt, texts))
    plain = TextMatcher(rest, texts)
    for text in (" Kalo Mirten lives in Utrecht", " Ines Farrow", " Ines Farrow and Kalo Mirten"):
        live, plain_live, state, plain_state = frozenset(), frozenset(), matcher.start, plain.start
        for t in tok(text, add_special_tokens=False)["input_ids"]:
            assert trie.blocked(live) == plain_trie.blocked(plain_live)
            assert matcher.blocked(state) == plain.blocked(plain_state)
            live, plain_live = trie.advance(live, t), plain_trie.advance(plain_live, t)
            state, plain_state = matcher.advance_tokens(state, [t]), plain.advance_tokens(plain_state, [t])


def test_a_large_policy_gets_a_graph_index_that_finds_the_flat_indexs_nearest_items(monkeypatch):
    """Above HNSW_MIN_ITEMS forget questions the semantic index is a HNSW graph: on queries near the
    items (as paraphrases are) its nearest item is the exact search's, it keeps its search depth when
    written and read back, and the same vectors give the same graph (reproducible policy checksums)."""
    import faiss
    import numpy as np

    from unlearnkit.guard import build as B

    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(3000, 384)).astype("float32")
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    assert isinstance(B.semantic_index(vecs), faiss.IndexFlatIP)          # below the bar: exact
    monkeypatch.setattr(B, "HNSW_MIN_ITEMS", 1000)
    graph = B.semantic_index(vecs)
    assert isinstance(graph, faiss.IndexHNSWFlat) and graph.ntotal == 3000
    queries = vecs[rng.choice(3000, 300, replace=False)] + rng.normal(scale=0.03, size=(300, 384)).astype("float32")
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    flat = faiss.IndexFlatIP(384)
    flat.add(vecs)
    (want_s, want_i), (got_s, got_i) = flat.search(queries, 4), graph.search(queries, 4)
    assert (got_i[:, 0] == want_i[:, 0]).all()
    np.testing.assert_allclose(got_s[:, 0], want_s[:, 0], rtol=1e-5)
    again = faiss.deserialize_index(faiss.serialize_index(graph))
    assert again.hnsw.efSearch == B.HNSW_EF_SEARCH
    assert bytes(faiss.serialize_index(B.semantic_index(vecs))) == bytes(faiss.serialize_index(graph))


@pytest.mark.parametrize("shape", ["lines", "messages", "sentences"])
def test_a_prompts_embedding_work_is_bounded_and_reads_every_word(shape):
    """Thousands of one-word lines or messages cost at most MAX_QUERIES embedded texts, and every
    word is still in one of them (a question hidden anywhere is read)."""
    from unlearnkit.guard.classifier import MAX_QUERIES, queries

    words = [f"w{i}" for i in range(3000)]
    if shape == "lines":
        whole = "\n".join(words)
    elif shape == "messages":
        whole = "".join(f"<|im_start|>user\n{w}<|im_end|>\n" for w in words)
    else:
        whole = " ".join(f"{w}." for w in words)
    texts = queries(whole, [words[-1]] if shape == "messages" else [whole])
    assert len(texts) <= MAX_QUERIES
    read = {w.strip(".") for t in texts for w in t.split()}
    assert set(words) <= read
