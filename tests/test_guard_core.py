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


def test_every_spelling_of_a_phrase_is_blocked(tiny_tokenizer_factory):
    from unlearnkit.guard.build import token_sequences
    from unlearnkit.guard.spellings import Spellings

    tok = tiny_tokenizer_factory()
    spellings = Spellings(tok)
    found = spellings(" Mirten", limit=1000)
    canonical = tok(" Mirten", add_special_tokens=False)["input_ids"]
    assert canonical in found and len(found) > 1
    assert all(tok.decode(s) == " Mirten" for s in found)
    assert len(spellings(" Mirten", limit=3)) == 3
    trie = TokenTrie(token_sequences(tok, ["Mirten"], spellings))
    other = next(s for s in found if s != canonical)          # a split the tokenizer itself never makes
    live = frozenset()
    for t in other[:-1]:
        live = trie.advance(live, t)
    assert other[-1] in trie.blocked(live)
    plain = TokenTrie(token_sequences(tok, ["Mirten"]))       # without spellings it would get through
    live = frozenset()
    for t in other[:-1]:
        live = plain.advance(live, t)
    assert other[-1] not in plain.blocked(live)


def test_stems_catch_near_misses():
    from unlearnkit.guard.phrases import item_phrases, stems

    assert stems("Nikolai Abilov") == ["Nikol", "Abilo"]
    assert stems("Basil Al") == []                             # too short to cut
    assert "Abilo" in item_phrases("Who?", "It was Nikolai Abilov.")
