"""Membership inference: every attack tells a tiny model's training texts from texts it never saw."""

from __future__ import annotations

import math

import pytest

from unlearnkit.evaluation.metrics import mia as MIA
from unlearnkit.evaluation.metrics.memorization import mia_auc, min_k_score


def test_scores_follow_their_formulas():
    lp = [-1.0, -3.0, -0.5, -2.0]
    assert MIA.loss_score(lp) == pytest.approx(1.625)
    assert MIA.zlib_score(lp, "abc") == pytest.approx(1.625 / 11)     # zlib("abc") is 11 bytes
    # Min-K%++: standardised by the position's mean and std; a zero std counts as z = 0
    z = [(-1.0 + 2.0) / 1.0, (-3.0 + 2.0) / 0.5, 0.0, (-2.0 + 1.0) / 2.0]
    assert MIA.min_k_plus_plus_score(lp, [-2.0, -2.0, -1.0, -1.0], [1.0, 0.5, 0.0, 2.0], 0.5) == \
        pytest.approx(min_k_score(z, 0.5))
    assert MIA.reference_scores([2.0, 1.0], [1.5, 1.5]) == [0.5, -0.5]
    assert MIA.gradnorm_score([1.0, 3.0]) == 2.0 and math.isnan(MIA.gradnorm_score([]))
    assert set(MIA.GUARD_MOVES) == {"loss", "zlib", "min_k", "min_k_pp", "reference", "gradnorm"}
    assert not MIA.GUARD_MOVES["gradnorm"]


def _train(model, texts, steps: int = 40):
    import torch

    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for step in range(steps):
        for ids in texts:
            x = torch.tensor([ids])
            loss = model(input_ids=x, labels=x).loss
            loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    return model


def test_each_attack_separates_members_from_non_members(tiny_tokenizer_factory, tiny_model_factory):
    import copy

    from unlearnkit.data.synth import synth_qa
    from unlearnkit.evaluation.gradnorm import gradnorm_scores
    from unlearnkit.evaluation.teacher_forcing import score_continuations

    tok = tiny_tokenizer_factory()
    texts = [r.answer for r in synth_qa(6, seed=0)][:24]
    ids = [tok(t)["input_ids"] for t in texts]
    members, others = ids[::2], ids[1::2]
    base = tiny_model_factory(len(tok))
    model = _train(copy.deepcopy(base), members)

    def scored(m, group):
        return [s[0] for s in score_continuations(m, [x[:1] for x in group], [[x[1:]] for x in group])]

    def attacks(group, text_of):
        mine, ref = scored(model, group), scored(base, group)
        return {"loss": [MIA.loss_score(s.logprobs) for s in mine],
                "zlib": [MIA.zlib_score(s.logprobs, t) for s, t in zip(mine, text_of)],
                "min_k": [min_k_score(s.logprobs, 0.4) for s in mine],
                "min_k_pp": [MIA.min_k_plus_plus_score(s.logprobs, s.means, s.stds, 0.4) for s in mine],
                "reference": MIA.reference_scores([s.avg_loss for s in mine], [s.avg_loss for s in ref]),
                "gradnorm": gradnorm_scores(model, group)}

    got_in, got_out = attacks(members, texts[::2]), attacks(others, texts[1::2])
    # MUSE's convention: members are the positive class and scores are losses, so ~0 = told apart
    separation = {name: 1 - mia_auc(got_in[name], got_out[name]) for name in got_in}
    assert all(v > 0.7 for v in separation.values()), separation


def test_teacher_forcing_gives_each_position_its_next_token_moments(tiny_tokenizer_factory, tiny_model_factory):
    import torch

    from unlearnkit.evaluation.teacher_forcing import score_continuations

    tok = tiny_tokenizer_factory()
    model = tiny_model_factory(len(tok)).eval()
    ids = tok("Who wrote the book? A writer.")["input_ids"]
    got = score_continuations(model, [ids[:3]], [[ids[3:]]])[0][0]
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0, 2:-1].float(), -1)
    mu = (logp.exp() * logp).sum(-1)
    sd = ((logp.exp() * logp.square()).sum(-1) - mu.square()).sqrt()
    # the std is a square root of E[x^2] - mu^2, whose fp32 cancellation differs with the kernels' summation order
    assert got.means == pytest.approx(mu.tolist(), abs=1e-4) and got.stds == pytest.approx(sd.tolist(), rel=5e-3, abs=1e-4)


def test_summary_reports_auc_and_privleak_per_attack():
    from unlearnkit.evaluation.config import EvalConfig
    from unlearnkit.evaluation.results import EvalResult, Summary, TaskResult, TextRecord
    from unlearnkit.evaluation.summary import privleak_auc, reference_from_result, summarize

    def result(forget_loss: float) -> EvalResult:
        def task(role, losses):
            items = [TextRecord(5, x, x, x / 10, x - 1) for x in losses]
            return TaskResult("text", role, "t", "f", {}, items)
        tasks = {"privleak_forget": task("forget", [forget_loss + d for d in (0.0, 0.1, 0.2)]),
                 "privleak_holdout": task("holdout", [2.0, 2.1, 2.2])}
        return EvalResult(tasks=tasks, privleak_auc=privleak_auc(tasks))

    retain = reference_from_result(result(2.05), "retain")
    assert retain.mia_aucs["reference"] == 0.5          # the reference attack against itself: chance
    leaky = summarize(result(1.0), EvalConfig(metrics=["privleak"]), retain)
    attacks = leaky.privleak.attacks
    assert set(attacks) == {"loss", "zlib", "min_k", "min_k_pp", "reference"}
    assert attacks["loss"]["auc"] == 0.0 and attacks["loss"]["privleak"] < 0 and attacks["loss"]["guard_moves"]
    assert attacks["reference"]["auc"] == 0.0 and attacks["reference"]["privleak"] == -100.0
    assert Summary.from_json(leaky.to_json()).privleak.attacks == attacks
