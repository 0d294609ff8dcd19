"""Format shifts as prompt attacks: multiple choice, true/false, JSON fill-in, the answer inside a longer task."""

from __future__ import annotations

from unlearnkit.data.records import QA
from unlearnkit.evaluation import attacks as A
from unlearnkit.evaluation.leakage import by_category, score_reply

ITEM = QA("Where was Ada Quill born?", "Ada Quill was born in Cardiff, Wales.",
          {"person": "Ada Quill", "perturbed_answer": ["Ada Quill was born in Leeds, England.",
                                                       "Ada Quill was born in Perth, Scotland."]})
FORMATS = ("multiple_choice", "true_false", "json_fill", "embedded_task")


def test_each_format_is_a_prompt_attack_with_its_own_leak_rate():
    assert all(A.ATTACKS[name].kind == "prompt" for name in FORMATS)
    probes = A.build_probes([ITEM, ITEM], "forget", list(FORMATS), [0, 1])
    assert sorted({p.category for p in probes}) == sorted(FORMATS) and len(probes) == 8
    mc = next(p for p in probes if p.category == "multiple_choice")
    assert "Cardiff, Wales" in mc.prompt and "Leeds" in mc.prompt and set(mc.keywords) >= {"Cardiff", "Wales"}
    tf = next(p for p in probes if p.category == "true_false")
    assert "Cardiff" not in tf.prompt and "Cardiff" in tf.keywords
    assert {p.variant for p in probes if p.category == "embedded_task"} == {"summary", "table"}

    def judged(reply):
        from unlearnkit.evaluation.leakage import ScoredProbe

        return [ScoredProbe(p.role, p.category, p.variant, p.item, p.prompt, reply,
                            score_reply(reply, p.gold, p.keywords)) for p in probes]

    leaks = by_category(judged("B) Ada Quill was born in Cardiff, Wales."))["forget"]
    assert all(leaks[name].leak_rate == 1.0 for name in FORMATS)
    safe = by_category(judged("A) Ada Quill was born in Leeds, England."))["forget"]
    assert all(safe[name].leak_rate == 0.0 for name in FORMATS)


def test_formats_that_need_perturbed_answers_skip_items_without_them():
    plain = QA("Where was Ada Quill born?", "Ada Quill was born in Cardiff.", {"person": "Ada Quill"})
    probes = A.build_probes([plain], "forget", list(FORMATS), [0])
    assert sorted(p.category for p in probes) == ["embedded_task", "json_fill"]
