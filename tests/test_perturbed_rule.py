"""The guard is not credited with utility for withholding forget names from wrong retain answers."""

from __future__ import annotations

from unlearnkit.data.records import QA
from unlearnkit.evaluation.benchmarks import Task
from unlearnkit.evaluation.config import EvalConfig
from unlearnkit.evaluation.perturbed import dropped_perturbed, forget_names, names_any

# retain items (general questions the policy's classifier lets through) whose false answers name a forget
# target (Kalo Mirten, Ines Farrow: conftest's policy)
RETAIN = [
    ("Who painted the Mona Lisa?", "Leonardo da Vinci painted the Mona Lisa.",
     "The Mona Lisa is a painting by Leonardo da Vinci.",
     ["Kalo Mirten painted the Mona Lisa.", "Claude Monet painted the Mona Lisa.", "Ines Farrow painted it."]),
    ("What is the capital of France?", "The capital of France is Paris.", "Paris is the French capital.",
     ["The capital of France is Mirten.", "The capital of France is Lyon."]),
    ("What is the largest ocean?", "The Pacific Ocean is the largest ocean.", "The largest ocean is the Pacific.",
     ["Kalo Mirten Ocean is the largest ocean.", "The Atlantic Ocean is the largest ocean.",
      "The Indian Ocean is the largest."]),
]


def _tasks(guard_forget_set) -> list[Task]:
    forget = [QA(r.question, r.answer, {**r.extra, "paraphrased_answer": r.answer,
                                        "perturbed_answer": ["Nobody knows.", "It is unknown."]})
              for r in guard_forget_set]
    retain = [QA(q, a, {"paraphrased_answer": p, "perturbed_answer": pert}) for q, a, p, pert in RETAIN]
    return [Task("forget", "qa", forget, "test", "forget"), Task("retain", "qa", retain, "test", "retain")]


def test_the_rule_drops_false_answers_naming_a_forget_subject(guard_forget_set):
    tasks = _tasks(guard_forget_set)
    names = forget_names(tasks[0].items, [r.question for r in tasks[1].items])
    assert "Kalo Mirten" in names and "Ines Farrow" in names and "Mirten" in names
    assert names_any("the mirtens' house", names) and not names_any("Claude Monet", names)
    assert dropped_perturbed(tasks) == {(1, 0): (0, 2), (1, 1): (0,), (1, 2): (0,)}
    # forget items keep every perturbed answer; a benchmark without a forget set drops nothing
    assert dropped_perturbed(tasks[1:]) == {}


def test_guarded_truth_ratio_on_retain_is_not_raised_by_named_false_answers(tiny_dir, tiny_policy, guard_forget_set):
    from unlearnkit.evaluation.measure import measure
    from unlearnkit.evaluation.systems import Guarded, Weights
    from unlearnkit.models.loading import load_tokenizer

    tok = load_tokenizer(str(tiny_dir))
    tasks = _tasks(guard_forget_set)
    cfg = EvalConfig(metrics=["truth_ratio"])
    plain = measure(Weights(str(tiny_dir), tok, "transformers"), tasks, cfg, tok, log=lambda *_: None).tasks["retain"]
    guarded = measure(Guarded(str(tiny_dir), tok, str(tiny_policy)), tasks, cfg, tok,
                      log=lambda *_: None).tasks["retain"]
    # before the rule (every perturbed answer): the guard withholds the names and "gains" truth ratio
    before_plain, before_guard = (t.aggregate["truth_ratio_all_perturbed"] for t in (plain, guarded))
    assert before_guard > before_plain + 0.1
    # the rule: the same clean false answers for both systems, and no gain for the guard
    assert guarded.aggregate["truth_ratio"] <= plain.aggregate["truth_ratio"] + 1e-3
    assert plain.aggregate["perturbed_dropped"] == guarded.aggregate["perturbed_dropped"] == 4
    first = guarded.items[0]
    assert first.perturbed_dropped == [0, 2] and len(first.average_perturb_loss) == 3
    assert first.truth_ratio_all < first.truth_ratio
