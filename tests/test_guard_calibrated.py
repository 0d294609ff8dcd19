"""Calibrated mode: matched tokens lowered by a fitted soft mask instead of withheld; the fit."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from unlearnkit.data.records import QA
from unlearnkit.guard.calibrate import calibrate_soft_mask, calibration_split, check_counterfactuals, fit_soft_mask
from unlearnkit.guard.decode import BLOCKED, RequestGuard
from unlearnkit.guard.policy import GuardConfig, PolicyError
from unlearnkit.guard.textmatch import TextMatcher, TokenTexts
from unlearnkit.guard.trie import TokenTrie


def test_soft_mask_lowers_matched_tokens_and_withholds_nothing():
    trie = TokenTrie([[5, 7], [9]])
    row = torch.zeros(12)
    RequestGuard(trie, soft=2.5).apply_row(row)
    assert row[9] == -2.5 and (row[[i for i in range(12) if i != 9]] == 0).all()   # 7 only after 5
    row = torch.zeros(12)
    RequestGuard(trie, soft=2.5).apply_row(row, extra=[5])
    assert row[7] == -2.5 and row[9] == -2.5 and torch.isfinite(row).all()
    row = torch.zeros(12)
    RequestGuard(trie).apply_row(row, extra=[5])                                     # strict: withheld
    assert row[7] == BLOCKED and row[9] == BLOCKED


def test_request_targets_stay_withheld_in_calibrated_mode(tiny_dir):
    from unlearnkit.models.loading import load_tokenizer

    tok = load_tokenizer(str(tiny_dir))
    texts = TokenTexts(tok)
    extra = TextMatcher(["Kalo Mirten"], texts)
    ids = tok("Who is Kalo Mirten", add_special_tokens=False)["input_ids"]
    guard = RequestGuard(TokenTrie(), soft=1.0, extra=extra)
    guard.prime(ids[:-1])
    row = torch.zeros(len(tok))
    guard.apply_row(row)
    assert row[ids[-1]] == BLOCKED


def test_fit_finds_the_smallest_mask_reaching_the_ratio():
    calls = []

    def median_at(s):
        calls.append(s)
        return 0.5 * math.exp(s / 4)          # monotone; reaches 1 at s = 4 ln 2

    s, value, reached = fit_soft_mask(median_at, 1.0)
    assert reached and value >= 1.0 and s == pytest.approx(4 * math.log(2), rel=0.03)
    assert fit_soft_mask(lambda s: 1.3, 1.0) == (0.0, 1.3, True)              # already ignorant: no mask
    s, value, reached = fit_soft_mask(lambda s: 0.5 + s / 1000, 1.0)           # 0.56 at the top
    assert not reached and value < 1.0


def test_calibration_split_is_disjoint_and_spans_the_set():
    fitted, held = calibration_split(list(range(40)), 0.5)
    assert len(fitted) == 20 and set(fitted).isdisjoint(held) and sorted(fitted + held) == list(range(40))
    assert fitted[:3] == [0, 2, 4]
    assert calibration_split(list(range(5)), 1.0) == ([0, 1, 2, 3, 4], [])


def test_sets_without_counterfactuals_are_refused_by_name():
    good = QA("q", "a", {"paraphrased_answer": "a'", "perturbed_answer": ["b", "c"]})
    check_counterfactuals([good])
    with pytest.raises(PolicyError, match="1 of 2 items of the forget set have none.*mode: strict"):
        check_counterfactuals([good, QA("q2", "a2")])


class FakeProbe:
    requests = [None] * 4
    runtime = SimpleNamespace(policy=SimpleNamespace(config=GuardConfig(penalty=0.0)))

    def __init__(self, at):
        self.at = at

    def ratios(self, s, guarded=True, penalty=False):
        if not guarded:
            return [0.4] * 4
        return [50.0] * 4 if s is None else [self.at(s)] * 4

    def ratios_at(self, s, penalty=False):
        return [self.at(s)] * 4


def test_an_unreachable_calibration_says_so_with_the_figures():
    with pytest.raises(PolicyError, match=r"0\.400 unguarded, 0\.46\d at the largest soft mask"):
        calibrate_soft_mask(FakeProbe(lambda s: 0.4 + s / 1000), GuardConfig(mode="calibrated"), progress=lambda *_: None)
    fit = calibrate_soft_mask(FakeProbe(lambda s: 0.4 * math.exp(s / 3)), GuardConfig(mode="calibrated"), progress=lambda *_: None)
    assert fit.median_ratio >= 1.0 and fit.soft_mask == pytest.approx(3 * math.log(2.5), rel=0.03)
    with pytest.raises(PolicyError, match=r"cannot reach the reference's median truth ratio 90\.000.*0\.400 unguarded"):
        calibrate_soft_mask(FakeProbe(lambda s: 0.4 + s / 1000), GuardConfig(mode="calibrated", penalty=0.0),
                            progress=lambda *_: None, reference=[80.0, 90.0, 100.0])


def test_bad_calibrated_configs_are_refused():
    for bad, message in ((dict(mode="soft"), "mode must be one of"), (dict(soft_mask=-1.0), "soft_mask"),
                         (dict(calibration_ratio=0.0), "calibration_ratio"), (dict(calibration_fraction=0), "fraction")):
        with pytest.raises(PolicyError, match=message):
            GuardConfig(**bad).validate()


def test_strict_policies_record_the_config_they_always_did():
    assert set(GuardConfig().as_meta()) == {"fpr", "default_threshold", "top_k", "answers", "key_words", "penalty",
                                            "penalty_min_sim", "max_retain", "refusal"}
    assert GuardConfig(mode="calibrated").as_meta()["mode"] == "calibrated"


def test_calibrated_build_serves_what_it_measured(tmp_path, tiny_dir, guard_forget_set):
    """A calibrated policy built on the tiny model: the fitted mask reaches the asked median truth
    ratio on its items, the runtime serves that mask, and scoring through it gives the same ratios."""
    from unlearnkit.evaluation.calibration import RatioProbe, build_policy
    from unlearnkit.guard.policy import load_policy
    from unlearnkit.guard.runtime import GuardRuntime
    from unlearnkit.models.loading import load_model, load_tokenizer

    forget = [QA(r.question, r.answer, {"paraphrased_answer": r.answer, "perturbed_answer": [
        r.answer.replace("Kalo Mirten", "Aldo Brenn").replace("Ines Farrow", "Mara Dune").replace("19", "18")]})
        for r in guard_forget_set]
    tok = load_tokenizer(str(tiny_dir))
    cfg = GuardConfig(fpr=0.25, penalty=0.0, mode="calibrated", calibration_ratio=1.5, calibration_fraction=0.6)
    with pytest.raises(PolicyError, match="counterfactual"):
        build_policy(guard_forget_set, tmp_path / "none", str(tiny_dir), tok, cfg, progress=lambda *_: None)
    assert not (tmp_path / "none").exists()
    meta = build_policy(forget, tmp_path / "p", str(tiny_dir), tok, cfg, progress=lambda *_: None)
    cal = meta["calibration"]
    assert cal["soft_mask"] > 0 and cal["median_truth_ratio"] >= 1.5 > cal["median_truth_ratio_unguarded"]
    assert cal["median_truth_ratio_strict"] > cal["median_truth_ratio"]
    policy = load_policy(tmp_path / "p", tok)
    runtime = GuardRuntime(policy, tok)
    assert runtime.soft_mask == pytest.approx(cal["soft_mask"])
    model, _ = load_model(str(tiny_dir))
    probe = RatioProbe(model, tok, runtime, [forget[i] for i in cal["fitted_items"]])
    assert float(np.median(probe.ratios(runtime.soft_mask))) == pytest.approx(cal["median_truth_ratio"], rel=1e-5)


def test_policy_summary_says_the_mode():
    from unlearnkit.guard.policy import policy_summary

    meta = {"targets": [], "items": [], "config": {}, "calibration": {"threshold": 0.5}}
    assert "mode: strict" in policy_summary(meta)
    meta = {**meta, "config": {"mode": "calibrated"}, "calibration": {
        "threshold": 0.5, "soft_mask": 3.25, "median_truth_ratio_unguarded": 0.5, "median_truth_ratio": 1.01,
        "fitted_items": [0, 2], "median_truth_ratio_strict": 40.0, "held_out_median_truth_ratio": 0.97}}
    text = policy_summary(meta)
    assert "soft mask 3.250 logits" in text and "held-out forget items: median truth ratio 0.970" in text


def test_statistics_give_every_soft_mask_without_a_model_pass(tmp_path, tiny_dir, guard_forget_set):
    """The one-pass statistics (calibrate.TokenStats) agree with a real guarded pass at each mask."""
    from unlearnkit.evaluation.calibration import RatioProbe, build_policy
    from unlearnkit.guard.policy import load_policy
    from unlearnkit.guard.runtime import GuardRuntime
    from unlearnkit.models.loading import load_model, load_tokenizer

    forget = [QA(r.question, r.answer, {"paraphrased_answer": r.answer, "perturbed_answer": [
        r.answer.replace("Kalo Mirten", "Aldo Brenn").replace("Ines Farrow", "Mara Dune")]}) for r in guard_forget_set]
    tok = load_tokenizer(str(tiny_dir))
    build_policy(forget, tmp_path / "p", str(tiny_dir), tok, GuardConfig(fpr=0.25), progress=lambda *_: None)
    model, _ = load_model(str(tiny_dir))
    probe = RatioProbe(model, tok, GuardRuntime(load_policy(tmp_path / "p", tok), tok), forget)
    assert any(t.is_matched.any() for by in probe.statistics() for t in by.values())
    for s in (0.0, 1.5, 6.0):
        assert probe.ratios_at(s) == pytest.approx(probe.ratios(s), rel=1e-4)


def test_ks_distance_is_scipys():
    from scipy.stats import ks_2samp

    from unlearnkit.guard.calibrate import ks_distance

    rng = np.random.default_rng(0)
    for _ in range(5):
        a, b = rng.lognormal(size=17), rng.lognormal(0.3, size=40)
        assert ks_distance(a, b) == pytest.approx(ks_2samp(a, b).statistic)


def test_the_reference_fit_reaches_the_reference_median_and_adds_nothing_to_a_model_already_there():
    rng = np.random.default_rng(1)
    base = rng.lognormal(-0.6, 0.4, size=30)              # a model that knows: prefers the true answers
    reference = list(base * math.exp(3.0 / 4))             # never learnt: the same shape, shifted

    class Shifting(FakeProbe):
        runtime = SimpleNamespace(policy=SimpleNamespace(config=GuardConfig(penalty=0.0)))

        def __init__(self, start):
            super().__init__(None)
            self.start = start

        def ratios(self, s, guarded=True, penalty=False):
            return list(self.start * (math.exp((s or 0.0) / 4) if guarded and s is not None else 1.0))

        def ratios_at(self, s, penalty=False):
            return self.ratios(s, penalty=penalty)

    fit = calibrate_soft_mask(Shifting(base), GuardConfig(mode="calibrated"), progress=lambda *_: None,
                              reference=reference)
    assert fit.soft_mask == pytest.approx(3.0, abs=0.1) and fit.reference_ks < 0.1
    assert fit.median_ratio == pytest.approx(np.median(reference), rel=0.03)
    already = calibrate_soft_mask(Shifting(np.array(reference) * 1.1), GuardConfig(mode="calibrated"),
                                  progress=lambda *_: None, reference=reference)
    assert already.soft_mask == 0.0 and not already.semantic_penalty


def test_reference_items_must_be_never_learnt_counterfactual_items():
    from unlearnkit.guard.calibrate import reference_items

    item = lambda q: QA(q, "a", {"paraphrased_answer": "a'", "perturbed_answer": ["b"]})  # noqa: E731
    forget = [item("q1")]
    assert len(reference_items([item(f"r{i}") for i in range(500)], forget)) == 400
    with pytest.raises(PolicyError, match="never learnt.*forget questions"):
        reference_items([item("r1"), item("q1")], forget)
    with pytest.raises(PolicyError, match="calibration_reference have none"):
        reference_items([QA("r1", "a")], forget)


def test_calibrated_build_against_a_reference(tmp_path, tiny_dir, guard_forget_set, monkeypatch):
    import json

    from unlearnkit.evaluation.calibration import build_policy
    from unlearnkit.models.loading import load_tokenizer

    swap = lambda a: a.replace("Kalo Mirten", "Aldo Brenn").replace("Ines Farrow", "Mara Dune")  # noqa: E731
    forget = [QA(r.question, r.answer, {"paraphrased_answer": r.answer, "perturbed_answer": [swap(r.answer)]})
              for r in guard_forget_set]
    unseen = [QA(f"Who is author number {i}?", f"Author number {i} writes poems about rivers.",
                 {"paraphrased_answer": f"Number {i} is a poet of rivers.",
                  "perturbed_answer": [f"Author number {i} builds bridges."]}) for i in range(12)]
    ref = tmp_path / "unseen.jsonl"
    ref.write_text("\n".join(json.dumps(r.to_json()) for r in unseen))
    cfg = GuardConfig(fpr=0.25, penalty=0.0, mode="calibrated", calibration_reference=f"file:{ref}")
    meta = build_policy(forget, tmp_path / "p", str(tiny_dir), load_tokenizer(str(tiny_dir)), cfg,
                        progress=lambda *_: None)
    cal = meta["calibration"]
    assert 0 <= cal["soft_mask"] <= 60 and 0 <= cal["reference_ks_distance"] <= 1
    assert cal["reference_median_truth_ratio"] > 0 and meta["config"]["calibration_reference"] == f"file:{ref}"


def test_calibrated_guards_carry_no_fixed_penalty_unless_a_request_asks(tiny_policy, tiny_dir):
    from unlearnkit.guard.classifier import Decision
    from unlearnkit.guard.policy import load_policy
    from unlearnkit.guard.runtime import GuardRuntime, RequestArgs
    from unlearnkit.models.loading import load_tokenizer

    tok = load_tokenizer(str(tiny_dir))
    runtime = GuardRuntime(load_policy(tiny_policy, tok), tok)
    text = tok.apply_chat_template([{"role": "user", "content": "Who is the author Kalo Mirten?"}], tokenize=False,
                                   add_generation_prompt=True)
    q = tok(text, add_special_tokens=False)["input_ids"]
    decision = runtime.decide([q], [RequestArgs()])[0]
    assert decision.flagged and runtime.guard_for(decision, RequestArgs()).penalty is not None   # strict
    runtime.soft_mask = 3.0
    guard = runtime.guard_for(decision, RequestArgs())
    assert guard.penalty is None and guard.soft == 3.0
    runtime.calibrated_penalty = True                                                             # the fit kept it
    assert runtime.guard_for(decision, RequestArgs()).penalty is not None
    runtime.calibrated_penalty = False
    assert runtime.guard_for(decision, RequestArgs(penalty=8.0)).penalty is not None             # tightened
    assert isinstance(decision, Decision)


def test_the_fit_keeps_the_semantic_penalty_unless_the_config_drops_it():

    rng = np.random.default_rng(2)
    reference = rng.lognormal(-0.15, 0.4, size=60)
    base = np.sort(rng.lognormal(-0.6, 0.4, size=20))
    asked = []

    class TwoWayProbe(FakeProbe):
        runtime = SimpleNamespace(policy=SimpleNamespace(config=GuardConfig(penalty=4.0)))

        def ratios(self, s, guarded=True, penalty=False):
            return list(base) if not guarded else list(base * math.exp((s or 0.0) / 8 + (0.3 if penalty else 0.0)))

        def ratios_at(self, s, penalty=False):
            asked.append(penalty)
            return self.ratios(s, penalty=penalty)

    fit = calibrate_soft_mask(TwoWayProbe(None), GuardConfig(mode="calibrated"), progress=lambda *_: None,
                              reference=list(reference))
    assert fit.semantic_penalty and set(asked) == {True} and fit.reference_ks < 0.3
    asked.clear()
    fit = calibrate_soft_mask(TwoWayProbe(None), GuardConfig(mode="calibrated", calibration_penalty=False),
                              progress=lambda *_: None, reference=list(reference))
    assert not fit.semantic_penalty and set(asked) == {False}


def test_scoring_floors_only_what_the_guard_withheld():
    """A token the model itself puts 80 logits below the best keeps its logit; a withheld one is floored."""
    from unlearnkit.guard.scoring import FLOOR, guarded_logits

    logits = torch.zeros(1, 12)
    logits[0, 3] = -80.0                                   # the model's own near-impossible token
    out = guarded_logits([RequestGuard(TokenTrie([[9]]))], logits, torch.tensor([0]), [[]])
    assert out[0, 3] == -80.0 and out[0, 9] == -FLOOR and out[0, 0] == 0.0
    soft = guarded_logits([RequestGuard(TokenTrie([[9]]), soft=0.0)], logits, torch.tensor([0]), [[]])
    assert torch.equal(soft, logits)                        # mask 0: the unguarded row, exactly


def test_a_fixed_mask_keeps_the_semantic_penalty_like_a_fitted_one():
    """Dial points (a fixed soft_mask) and the fitted mask must mean the same thing: mask over the
    policy's penalty unless the config drops it, and the recorded ratio is the one served."""
    seen = []

    class Probe(FakeProbe):
        runtime = SimpleNamespace(policy=SimpleNamespace(config=GuardConfig(penalty=4.0)))

        def ratios(self, s, guarded=True, penalty=False):
            seen.append(penalty)
            return [0.4] * 4 if not guarded else [2.0 if penalty else 1.0] * 4

    kept = calibrate_soft_mask(Probe(None), GuardConfig(mode="calibrated", soft_mask=6.0), progress=lambda *_: None)
    assert kept.semantic_penalty and kept.median_ratio == 2.0 and seen[-1] is True
    dropped = calibrate_soft_mask(Probe(None), GuardConfig(mode="calibrated", soft_mask=6.0, calibration_penalty=False),
                                  progress=lambda *_: None)
    assert not dropped.semantic_penalty and dropped.median_ratio == 1.0


def test_the_held_out_figure_is_measured_as_served(tmp_path, tiny_dir, guard_forget_set):
    """A build's held-out median truth ratio comes from the guard as it will be served: the mask over
    the semantic penalty when the policy keeps it."""
    from unlearnkit.evaluation.calibration import RatioProbe, build_policy
    from unlearnkit.guard.policy import load_policy
    from unlearnkit.guard.runtime import GuardRuntime
    from unlearnkit.models.loading import load_model, load_tokenizer

    swap = lambda a: a.replace("Kalo Mirten", "Aldo Brenn").replace("Ines Farrow", "Mara Dune")  # noqa: E731
    forget = [QA(r.question, r.answer, {"paraphrased_answer": r.answer, "perturbed_answer": [swap(r.answer)]})
              for r in guard_forget_set]
    tok = load_tokenizer(str(tiny_dir))
    cfg = GuardConfig(fpr=0.25, penalty=6.0, mode="calibrated", soft_mask=3.0)
    meta = build_policy(forget, tmp_path / "p", str(tiny_dir), tok, cfg, progress=lambda *_: None)
    cal = meta["calibration"]
    assert cal["semantic_penalty"]
    model, _ = load_model(str(tiny_dir))
    held = [forget[i] for i in range(len(forget)) if i not in set(cal["fitted_items"])]
    probe = RatioProbe(model, tok, GuardRuntime(load_policy(tmp_path / "p", tok), tok), held)
    served = float(np.median(probe.ratios(3.0, penalty=True)))
    assert cal["held_out_median_truth_ratio"] == pytest.approx(served, rel=1e-5)
    assert served != pytest.approx(float(np.median(probe.ratios(3.0, penalty=False))), rel=1e-3)


def _fates(guard, tok, text: str) -> list[float]:
    """What the guard leaves of each token of `text` in turn (0 untouched, -s lowered, -inf withheld)."""
    out = []
    for t in tok(text, add_special_tokens=False)["input_ids"]:
        row = torch.zeros(len(tok))
        guard.apply_row(row)
        out.append(float(row[t]))
        guard.feed([t])
    return out


def _chat_ids(tok, content: str) -> list[int]:
    text = tok.apply_chat_template([{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True)
    return tok(text, add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("written", ["Who is the author Kalo Mirten?", "Who is the author K a l o  M i r t e n?",
                                     "Who is the author Каlo Mіrten?"])
def test_calibrated_mode_lowers_a_name_the_prompt_wrote_and_withholds_the_others(tiny_policy, tiny_dir, written):
    """A never-learnt model can repeat the name it was asked about (in any disguise the classifier
    reads), but cannot produce another target's name, nor one it was not given."""
    from unlearnkit.guard.policy import load_policy
    from unlearnkit.guard.runtime import GuardRuntime, RequestArgs
    from unlearnkit.models.loading import load_tokenizer

    tok = load_tokenizer(str(tiny_dir))
    runtime = GuardRuntime(load_policy(tiny_policy, tok), tok)
    runtime.soft_mask = 3.0
    ids = _chat_ids(tok, written)
    decision = runtime.decide([ids], [RequestArgs()])[0]
    assert decision.flagged and decision.named
    kalo = _fates(runtime.guards([(ids, None)])[0], tok, " Kalo Mirten")
    assert -3.0 in kalo and not any(math.isinf(v) for v in kalo)
    ines = _fates(runtime.guards([(ids, None)])[0], tok, " Ines Farrow")
    assert any(math.isinf(v) for v in ines)
    runtime.soft_mask = None                                   # strict: both withheld
    assert any(math.isinf(v) for v in _fates(runtime.guards([(ids, None)])[0], tok, " Kalo Mirten"))


def test_calibrated_mode_withholds_the_name_of_a_target_asked_about_without_it(tiny_policy, tiny_dir):
    from unlearnkit.guard.classifier import Decision
    from unlearnkit.guard.policy import load_policy
    from unlearnkit.guard.runtime import GuardRuntime, RequestArgs
    from unlearnkit.models.loading import load_tokenizer

    tok = load_tokenizer(str(tiny_dir))
    runtime = GuardRuntime(load_policy(tiny_policy, tok), tok)
    runtime.soft_mask = 3.0
    ids = _chat_ids(tok, "Who is the Dutch poet born in 1961 in Utrecht?")
    kalo = [t for t, target in enumerate(runtime.policy.targets) if target["name"] == "Kalo Mirten"]
    targets, items = runtime.classifier.expand(set(kalo), set())
    guard = runtime.guard_for(Decision(True, 0.9, "similarity", targets, items), RequestArgs(), prompt=ids)
    guard.prime(ids[-32:])
    fates = _fates(guard, tok, " Kalo Mirten")
    assert any(math.isinf(v) for v in fates)
    facts = _fates(runtime.guard_for(Decision(True, 0.9, "similarity", targets, items), RequestArgs(), prompt=ids),
                   tok, " Utrecht")
    assert -3.0 in facts and not any(math.isinf(v) for v in facts)      # a fact is lowered, not withheld


def test_an_exempt_phrase_that_ends_another_name_stays_withheld():
    from unlearnkit.guard.withheld import CheckPhrases

    check = CheckPhrases(["Basil Mahfouz Al-Kuwaiti", "Al-Kuwaiti", "Basil", "Nikolai Abilov"])
    assert check.exempt(["Al-Kuwaiti"]) == ()                     # "...Al-Kuwaiti" ends with it
    assert check.exempt(["Basil", "Basil Mahfouz Al-Kuwaiti", "Al-Kuwaiti"]) == (
        "Al-Kuwaiti", "Basil", "Basil Mahfouz Al-Kuwaiti")
    assert check.exempt(["Nikolai Abilov"]) == ("Nikolai Abilov",)
    assert CheckPhrases(["Basil Mahfouz Al-Kuwaiti", "al kuwaiti"]).exempt(["al kuwaiti"]) == ()


def test_names_that_run_on_past_an_exempt_one_are_listed_to_stay_withheld():
    """One token can complete an exempt "Anna Berg" and run on into "Bergman" (" anna ber" + "gman"):
    the difference alone would let it through."""
    from unlearnkit.guard.withheld import CheckPhrases

    check = CheckPhrases(["Anna Berg", "Berg", "Bergman", "Annabelle Stone", "Ergo Lind", "Stone"])
    assert check.overlapping(["Anna Berg", "Berg"]) == ["Bergman", "Ergo Lind"]
    assert check.overlapping(["Stone"]) == ["Annabelle Stone"]          # contains it
    assert check.overlapping(["Ergo Lind"]) == []


def test_calibrated_mode_lowers_the_names_of_targets_that_share_an_item_with_the_one_named(tiny_policy, tiny_dir):
    """A book title in an answer about its author is a fact about the subject asked about: lowered
    like the other facts, not withheld; naming the book does not unlock the author (withheld.py).
    Here Ines Farrow is made a detail of Kalo Mirten's record."""
    from unlearnkit.guard.policy import load_policy
    from unlearnkit.guard.runtime import GuardRuntime
    from unlearnkit.models.loading import load_tokenizer

    tok = load_tokenizer(str(tiny_dir))
    runtime = GuardRuntime(load_policy(tiny_policy, tok), tok)
    runtime.soft_mask = 3.0
    names = [t["name"] for t in runtime.policy.targets]
    kalo, ines = names.index("Kalo Mirten"), names.index("Ines Farrow")
    ids = _chat_ids(tok, "Who is the author Kalo Mirten?")
    assert any(math.isinf(v) for v in _fates(runtime.guards([(ids, None)])[0], tok, " Ines Farrow"))
    shared = runtime.classifier.target_items[kalo][0]
    runtime.classifier.item_targets[shared] = (kalo, ines)
    runtime.classifier.target_items[ines] = (shared,)          # a detail of Kalo Mirten's record: 1 item of his 3
    fates = _fates(runtime.guards([(ids, None)])[0], tok, " Ines Farrow")
    assert -3.0 in fates and not any(math.isinf(v) for v in fates)
    by_detail = _chat_ids(tok, "Who is Ines Farrow?")                 # not the other way round
    assert any(math.isinf(v) for v in _fates(runtime.guards([(by_detail, None)])[0], tok, " Kalo Mirten"))
    unnamed = _chat_ids(tok, "Who is the Dutch poet born in 1961 in Utrecht?")   # names no target: nothing related
    guard = runtime.guards([(unnamed, {"unlearn_guard": True})])[0]
    assert any(math.isinf(v) for v in _fates(guard, tok, " Ines Farrow"))


def test_a_calibrated_build_measures_through_the_evaluation_probe(tmp_path, tiny_dir, guard_forget_set):
    """guard/ sits below evaluation/: guard.build refuses calibrated mode without the probe, and
    `unlearn guard build` (cli.py) builds it through evaluation.calibration.build_policy."""
    import json

    from unlearnkit.cli import main
    from unlearnkit.guard.build import build_policy
    from unlearnkit.models.loading import load_tokenizer

    swap = lambda a: a.replace("Kalo Mirten", "Aldo Brenn").replace("Ines Farrow", "Mara Dune")  # noqa: E731
    forget = [QA(r.question, r.answer, {"paraphrased_answer": r.answer, "perturbed_answer": [swap(r.answer)]})
              for r in guard_forget_set]
    cfg = GuardConfig(fpr=0.25, penalty=0.0, mode="calibrated", soft_mask=3.0)
    with pytest.raises(PolicyError, match="evaluation.calibration.build_policy"):
        build_policy(forget, tmp_path / "p", str(tiny_dir), load_tokenizer(str(tiny_dir)), cfg, progress=lambda *_: None)
    assert not (tmp_path / "p").exists()
    data = tmp_path / "forget.jsonl"
    data.write_text("\n".join(json.dumps(r.to_json()) for r in forget))
    assert main(["guard", "build", "--forget", f"file:{data}", "--model", str(tiny_dir), "--out", str(tmp_path / "cli"),
                 "fpr=0.25", "penalty=0", "mode=calibrated", "soft_mask=3.0"]) == 0
    assert json.loads((tmp_path / "cli" / "policy.json").read_text())["calibration"]["soft_mask"] == 3.0
