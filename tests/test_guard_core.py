"""The decode-time guard core (no vLLM): trie matching across tokenisation variants, and the slot
bookkeeping the vLLM adapters drive (added, removed, moved, swapped requests; slot reuse)."""

from __future__ import annotations

import pytest
import torch

from unlearnkit.guard.decode import GuardSlots, RequestGuard
from unlearnkit.guard.trie import TokenTrie, phrase_variants


def test_only_the_completing_token_is_blocked():
    trie = TokenTrie([[5, 6, 7], [9]])
    live = frozenset()
    assert trie.blocked(live) == {9}                   # single tokens: blocked everywhere
    live = trie.advance(live, 5)
    assert trie.blocked(live) == {9}                   # 7 is not blocked yet
    live = trie.advance(live, 6)
    assert trie.blocked(live) == {7, 9}                # 5 6 -> 7 would complete it
    live = trie.advance(live, 8)
    assert trie.blocked(live) == {9}                   # the match is broken


def test_overlapping_matches_restart():
    trie = TokenTrie([[1, 1, 2]])
    live = frozenset()
    for tok in (1, 1, 1):                              # "1 1 1": the last two still form a prefix
        live = trie.advance(live, tok)
    assert trie.blocked(live) == {2}


def test_empty_sequence_refused():
    with pytest.raises(ValueError, match="empty"):
        TokenTrie([[]])


def test_variants_cover_space_and_case():
    v = phrase_variants("kalo Mirten")
    assert {"kalo Mirten", " kalo Mirten", "kalo mirten", " KALO MIRTEN", "Kalo Mirten", " Kalo Mirten"} <= set(v)
    assert phrase_variants("  ") == []


def test_trie_blocks_every_tokenisation_variant(tiny_tokenizer_factory):
    tok = tiny_tokenizer_factory()
    trie = TokenTrie.from_phrases(tok, ["Kalo Mirten"])
    for variant in phrase_variants("Kalo Mirten"):
        ids = tok(variant, add_special_tokens=False)["input_ids"]
        live = frozenset()
        for t in ids[:-1]:
            live = trie.advance(live, t)
        assert ids[-1] in trie.blocked(live), variant
    assert len(trie) >= 4


def rows(n=4, vocab=12):
    return torch.zeros(n, vocab)


def test_slots_add_remove_move_swap_and_reuse():
    a_out, b_out = [], []
    slots = GuardSlots()
    slots.add(0, RequestGuard(TokenTrie([[3]])), a_out)
    slots.add(2, RequestGuard(TokenTrie([[4, 5]]), penalty=-torch.arange(12.0)), b_out)
    out = slots.apply(rows())
    assert out[0, 3] == float("-inf") and torch.isfinite(out[0, :3]).all()
    assert out[2, 1] == -1.0 and out[1].eq(0).all() and out[3].eq(0).all()   # unguarded rows untouched
    b_out.append(4)                                    # request b decodes token 4: 5 now completes
    out = slots.apply(rows())
    assert out[2, 5] == float("-inf")
    slots.move(2, 1, swap=False)                       # b moves to slot 1, slot 2 empties
    out = slots.apply(rows())
    assert out[1, 5] == float("-inf") and out[2].eq(0).all()
    slots.move(0, 1, swap=True)                        # a <-> b
    out = slots.apply(rows())
    assert out[1, 3] == float("-inf") and out[0, 5] == float("-inf")
    slots.add(1, None, [])                             # an unguarded request reuses a's slot
    out = slots.apply(rows())
    assert out[1].eq(0).all()
    slots.remove(0)
    assert slots.apply(rows()).eq(0).all()


def test_guard_consumes_only_new_tokens():
    out_ids = [7, 8]
    g = RequestGuard(TokenTrie([[8, 9]]))
    g.observe(out_ids)
    assert g.blocked() == [9] and g.consumed == 2
    g.observe(out_ids)                                 # nothing new: state unchanged
    assert g.blocked() == [9]
    out_ids.append(1)
    g.observe(out_ids)
    assert g.blocked() == []


def test_stems_catch_near_misses():
    from unlearnkit.guard.phrases import item_phrases, stems

    assert stems("Nikolai Abilov") == ["Nikol", "Abilo"]
    assert stems("Basil Al") == []                             # too short to cut
    assert "Abilo" in item_phrases("Who?", "It was Nikolai Abilov.")


def _first_completing(tok, matcher, text, phrase):
    """Walk `text`'s tokens through the matcher; return (token, blocked-before-it) for the token
    whose addition first makes the normalised text contain the phrase at a word start."""
    from unlearnkit.guard.textmatch import normalise

    state, so_far = matcher.start, " "
    for t in tok(text, add_special_tokens=False)["input_ids"]:
        before = matcher.blocked(state)
        so_far += normalise(tok.decode([t]))
        state = matcher.advance_tokens(state, [t])
        if " " + normalise(phrase) in so_far:
            return t, before
    return None, None


@pytest.mark.parametrize("text", [" Mirten", "MIRTEN", " the poet mirten's books", "Kalo Mirtenova", '"Mirten"'])
def test_text_matcher_blocks_any_split_and_case(tiny_tokenizer_factory, text):
    from unlearnkit.guard.textmatch import TextMatcher, TokenTexts

    tok = tiny_tokenizer_factory()
    matcher = TextMatcher(["Mirten"], TokenTexts(tok))
    token, blocked = _first_completing(tok, matcher, text, "Mirten")
    assert token is not None and token in blocked, text


def test_text_matcher_needs_a_word_start_and_spans_tokens(tiny_tokenizer_factory):
    from unlearnkit.guard.textmatch import TextMatcher, TokenTexts

    tok = tiny_tokenizer_factory()
    texts = TokenTexts(tok)
    matcher = TextMatcher(["Mirten"], texts)
    token, _ = _first_completing(tok, matcher, "Kalomirten", "Mirten")
    assert token is None                                      # inside a word: not this phrase
    # after " Mir", every token whose text starts with "ten" completes it (" Mir" + "tenova" too)
    state = matcher.advance(matcher.start, " mir")
    assert set(texts.starting_with("ten")) <= matcher.blocked(state)
    other = set(texts.starting_with("t")) - set(texts.starting_with("ten"))
    assert other and not other & matcher.blocked(state)      # " Mirt" + "a..." is another word


class VocabTokenizer:
    """A tokenizer over an explicit list of token strings (enough for TokenTexts)."""

    all_special_ids = [0]

    def __init__(self, pieces):
        self.pieces = ["<s>"] + list(pieces)

    def __len__(self):
        return len(self.pieces)

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [self.pieces.index(text)]}

    def decode(self, ids):
        return "".join(self.pieces[i] for i in ids)

    def batch_decode(self, batch):
        return [self.decode(ids) for ids in batch]


def test_a_phrase_inside_one_token_is_blocked_everywhere():
    from unlearnkit.guard.textmatch import TextMatcher, TokenTexts

    tok = VocabTokenizer(["a", " (Abilova", " Abil", "ova", " table", "(", "x\ufffd"])
    texts = TokenTexts(tok)
    assert texts.text[7] == "x"                                  # a byte fragment is no word start
    matcher = TextMatcher(["Abilov"], texts)
    assert 2 in matcher.inside and 2 in matcher.blocked(matcher.start)
    state = matcher.advance_tokens(matcher.start, [3])          # " Abil"
    assert 4 in matcher.blocked(state) and 5 not in matcher.blocked(state)


def test_guard_rows_fit_a_wider_or_narrower_vocabulary():
    trie = TokenTrie([[3], [11]])
    guard = RequestGuard(trie, penalty=-torch.ones(10))
    wide = torch.zeros(14)                                     # the model pads its vocabulary
    guard.apply_row(wide)
    assert wide[[0, 1, 2, 4, 9]].eq(-1).all() and wide[10] == 0 and wide[12:].eq(0).all()
    assert wide[3] == float("-inf") and wide[11] == float("-inf")
    narrow = torch.zeros(8)
    guard.apply_row(narrow)                                    # id 11 does not exist here: skipped
    assert narrow[3] == float("-inf") and narrow[[0, 1, 2, 4]].eq(-1).all()


# ----------------------------------------------------------------------------- a row with nothing left
def test_a_row_left_without_tokens_ends_the_response():
    """Another processor (a grammar, allowed_token_ids) left only the token the guard withholds: the
    guard ends the response (end of sequence) instead of handing the sampler a row of -inf."""
    guard = RequestGuard(TokenTrie([[9]]), fallback=0)
    row = torch.full((12,), float("-inf"))
    row[9] = 1.0
    guard.apply_row(row)
    assert row[9] == float("-inf") and row[0] == 0.0


def test_an_end_of_sequence_withheld_by_another_processor_stays_withheld():
    """min_tokens withholds end-of-sequence: while other tokens are left, the guard must not give it back."""
    guard = RequestGuard(TokenTrie([[9]]), fallback=0)
    row = torch.zeros(12)
    row[0] = float("-inf")
    guard.apply_row(row)
    assert row[0] == float("-inf") and row[9] == float("-inf") and torch.isfinite(row[1:9]).all()


def test_the_penalty_is_added_as_the_dense_row_would_be():
    """Only the penalty's non-zero entries are added; the row comes out as adding the whole dense
    penalty gives, with withheld entries kept and a model vocabulary narrower than the penalty."""
    gen = torch.Generator().manual_seed(0)
    penalty = torch.zeros(50)
    penalty[torch.randperm(50, generator=gen)[:7]] = -torch.rand(7, generator=gen) * 4
    for width in (50, 40):
        row = torch.randn(width, generator=gen)
        row[3] = float("-inf")
        expected = row + penalty[:width]
        guard = RequestGuard(TokenTrie(), penalty=penalty)
        guard.apply_row(row)
        assert torch.equal(row, expected)
    half = torch.zeros(50, dtype=torch.bfloat16)        # a half-precision row (teacher forcing in bf16)
    RequestGuard(TokenTrie(), penalty=penalty).apply_row(half)
    assert torch.equal(half, penalty.to(torch.bfloat16))
