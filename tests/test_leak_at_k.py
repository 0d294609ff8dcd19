"""leak@k: the unbiased estimator, the curve, and the compare attack through a system's generate path."""

from __future__ import annotations

import random

import pytest

from unlearnkit.evaluation.metrics.leak_at_k import leak_at_k, leak_curve

ANSWER = "Ada Quill was born in Cardiff in 1962."


def test_estimator_is_pass_at_k():
    assert leak_at_k(4, 1, 1) == 0.25
    assert leak_at_k(32, 8, 4) == pytest.approx(1 - (24 * 23 * 22 * 21) / (32 * 31 * 30 * 29))
    assert leak_at_k(32, 0, 32) == 0.0 and leak_at_k(32, 1, 32) == 1.0 and leak_at_k(5, 3, 3) == 1.0
    with pytest.raises(ValueError):
        leak_at_k(4, 1, 8)
    assert leak_curve([[True, False], [False, False]], [1, 2, 4]) == {1: 0.25, 2: 0.5}


class OneInFour:
    """A stub system: at temperature 1 each sample gives the true answer with probability 1/4."""
    name = "stub"

    def generate(self, batches):
        from unlearnkit.evaluation.systems import Generated

        out = []
        for b in batches:
            texts = [ANSWER if p.temperature > 0 and random.Random(f"{p.question}/{p.seed}").random() < 0.25
                     else "Ada Quill was a baker from Leeds." for p in b.prompts]
            out.append(Generated(texts, [0] * len(texts), 0.0))
        return out


def test_the_curve_rises_for_a_system_that_leaks_one_sample_in_four(tiny_dir, monkeypatch, tmp_path):
    from unlearnkit.compare import sampling as S
    from unlearnkit.compare.config import CompareConfig, System
    from unlearnkit.compare.measure import AttackTarget
    from unlearnkit.config import from_dict
    from unlearnkit.data.records import QA
    from unlearnkit.evaluation.config import EvalConfig

    forget = [QA(f"Where and when was Ada Quill born{'?' * k}", ANSWER, {"person": "Ada Quill"}) for k in range(1, 41)]
    cfg = from_dict(CompareConfig, {"name": "t", "eval": "e", "target": str(tiny_dir), "systems": ["target"],
                                    "attacks": {"max_new_tokens": 4}})
    calls = []

    def stub(t, batch, tok):
        calls.append(len(batch.prompts))
        assert {p.temperature for p in batch.prompts} == {1.0} and len({p.seed for p in batch.prompts}) == 32
        return OneInFour().generate([batch])[0].texts

    monkeypatch.setattr(S, "_generate", stub)
    target = AttackTarget(System("target", "target"), str(tiny_dir), None, forget, [], list(range(40)), EvalConfig(),
                          cfg, log=lambda *_: None)
    got = S.leak_at_k_attack(target)
    curve = got.curve
    assert calls == [40 * 32] and got.samples == 32 and sorted(curve) == [1, 4, 16, 32]
    assert curve[1] == pytest.approx(0.25, abs=0.05)
    assert curve[1] < curve[4] < curve[16] <= curve[32] and curve[32] > 0.95
    assert S.leak_at_k_attack(target).curve == curve and calls == [40 * 32]     # replies cached
    assert got.to_json()["curve"]["1"] == round(curve[1], 4)


def test_transformers_samples_differ_by_seed_and_greedy_does_not(tiny_dir):
    from unlearnkit.evaluation.scoring import Prompt
    from unlearnkit.evaluation.systems import Batch, Weights
    from unlearnkit.models.loading import load_tokenizer

    tok = load_tokenizer(str(tiny_dir))
    ids = tok("Who is Ada Quill?")["input_ids"]
    system = Weights(str(tiny_dir), tok, "transformers")
    sampled = system.generate([Batch([Prompt(ids, 6, None, 1.0, s) for s in range(4)])])[0].texts
    again = system.generate([Batch([Prompt(ids, 6, None, 1.0, 0)])])[0].texts
    greedy = system.generate([Batch([Prompt(ids, 6), Prompt(ids, 6)])])[0].texts
    assert len(set(sampled)) > 1 and again[0] == sampled[0] and greedy[0] == greedy[1]


@pytest.mark.slow
def test_seeded_samples_of_a_batch_longer_than_one_step_generate_on_vllm(vllm_sized_model):
    """leak@k's seeded samples through the offline engine: more prompt tokens than one engine step takes,
    so that chunked prefill (which kills a CPU engine on seeded requests) would split some prompt."""
    from unlearnkit.evaluation.vllm_generate import run_vllm

    rng = random.Random(0)
    prompts = [[rng.randrange(10, 200) for _ in range(400)] for _ in range(48)]    # 19,200 prompt tokens
    out = run_vllm(str(vllm_sized_model), {"prompt_token_ids": prompts, "max_tokens": 4, "dtype": "float32",
                                           "max_model_len": 512, "temperature": [1.0] * len(prompts),
                                           "seed": list(range(len(prompts)))}, timeout=600)
    assert len(out["token_ids"]) == len(prompts) and all(out["token_ids"])
