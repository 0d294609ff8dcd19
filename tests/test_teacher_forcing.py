"""The token-tree scorer must give what a plain causal forward of each sequence gives."""

from __future__ import annotations

import math

import pytest
import torch

from unlearnkit.evaluation.teacher_forcing import _build_tree, _common_prefix_length, score_continuations


def naive_scores(model, prefix, cont):
    ids = torch.tensor([list(prefix) + list(cont)])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].float()
    logp = torch.log_softmax(logits, -1)
    out, greedy = [], []
    for k, tok in enumerate(cont):
        pos = len(prefix) + k - 1
        out.append(float(logp[pos, tok]))
        greedy.append(bool(logits[pos].argmax() == tok))
    return out, greedy


def test_tree_shares_prefixes_of_continuations():
    tree = _build_tree([5, 6, 7], [[1, 2, 3], [1, 2, 4], [9]], shared=1)
    assert tree.tokens == [6, 7, 1, 2, 3, 4, 9]       # [1, 2] computed once
    assert tree.parents == [-1, 0, 1, 2, 3, 3, 1]
    assert tree.depths == [0, 1, 2, 3, 4, 4, 2]
    assert tree.targets == [[2, 3, 4], [2, 3, 5], [6]]


def test_common_prefix_leaves_one_token_per_item():
    assert _common_prefix_length([[1, 2, 3], [1, 2, 3, 4]]) == 2
    assert _common_prefix_length([[1, 2], [3, 2]]) == 0


@pytest.mark.parametrize("budget", [10_000, 40])  # one batch, and many small ones
def test_matches_plain_forward(tiny, budget):
    model, _ = tiny
    g = torch.Generator().manual_seed(0)

    def rand(n):
        return torch.randint(4, 300, (n,), generator=g).tolist()

    common = rand(5)  # shared by every prefix, like a system prompt
    prefixes = [common + rand(3), common + rand(6), common + rand(1)]
    conts = [[rand(4), rand(4)[:2] + rand(3), rand(1)],
             [rand(7)],
             [rand(2), rand(5), []]]
    conts[0][1][:2] = conts[0][0][:2]  # a shared answer prefix, as perturbed answers have
    scored = score_continuations(model, prefixes, conts, token_budget=budget)
    for p, cs, ss in zip(prefixes, conts, scored):
        assert len(ss) == len(cs)
        for c, s in zip(cs, ss):
            want, want_greedy = naive_scores(model, p, c)
            assert s.n_tokens == len(c)
            assert s.logprobs == pytest.approx(want, abs=1e-4)
            assert s.greedy == want_greedy
    empty = scored[2][2]
    assert empty.n_tokens == 0 and math.isnan(empty.avg_loss)


def test_transform_is_applied_per_item(tiny):
    model, _ = tiny
    banned = 50

    def ban(logits, owner, contexts):
        logits = logits.clone()
        logits[owner == 1, banned] = float("-inf")
        return logits

    out = score_continuations(model, [[5, 6], [5, 7]], [[[banned]], [[banned]]], transform_logits=ban)
    assert math.isfinite(out[0][0].logprobs[0])
    assert out[1][0].logprobs[0] == float("-inf")


def test_rejects_empty_prefix(tiny):
    with pytest.raises(ValueError, match="at least one token"):
        score_continuations(tiny[0], [[]], [[[3]]])
