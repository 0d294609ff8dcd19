"""One definition each, shared by every caller: the NaN-aware mean, the generation jobs and the
fields their answers fill, the guard policy's identity in cache keys (and the policy loaded once per
evaluation), the agent graph's node names."""

import json
import math

import pytest

from unlearnkit.data.records import QA
from unlearnkit.evaluation.benchmarks import Task
from unlearnkit.evaluation.config import EvalConfig
from unlearnkit.evaluation.metrics.means import finite_mean
from unlearnkit.evaluation.results import EvalResult, QARecord
from unlearnkit.files import json_digest

NAN = float("nan")


def naive_mean(values):
    total, n = 0.0, 0
    for v in values:
        if v is None or v != v:
            continue
        total, n = total + v, n + 1
    return total / n if n else None


@pytest.mark.parametrize("values", [[0.5, None, 0.25, NAN, 1.0], [True, False, True], [None, NAN], [], [3, 0.5]])
def test_finite_mean_skips_missing_and_nan_values(values):
    got, want = finite_mean(values), naive_mean(values)
    assert got == pytest.approx(want) if want is not None else got is None


def test_every_mean_is_the_finite_mean():
    from unlearnkit.evaluation.leakage import aggregate as leak_aggregate
    from unlearnkit.evaluation.probability import mean as probability_mean
    from unlearnkit.evaluation.scoring import aggregate

    from unlearnkit.evaluation.leakage import ReplyScore

    scored = [ReplyScore(0.5, None, False, True), ReplyScore(0.25, 0.5, True, False), ReplyScore(1.0, 1.0, False, True)]
    agg = leak_aggregate(scored)
    assert agg.leak_rate == round(2 / 3, 4) and agg.keywords == 0.75 and agg.refusal_rate == round(1 / 3, 4)
    assert probability_mean([0.2, NAN, 0.4]) == pytest.approx(0.3) and math.isnan(probability_mean([NAN]))
    task = Task("forget", "qa", [QA("q", "a")] * 3, "x")
    items = [QARecord("q", "a", probability=p) for p in (0.2, NAN, 0.4)]
    assert aggregate(task, items, EvalConfig(metrics=["probability"]))["probability"] == pytest.approx(0.3)


def _tasks():
    forget = Task("forget", "qa", [QA("Where was Kalo born?", "Kalo was born in Utrecht.",
                                      {"paraphrased_question": "Kalo's birthplace?"}),
                                   QA("What did Kalo write?", "Glass Rivers.", {})], "x")
    retain = Task("retain", "qa", [QA("Capital of France?", "Paris.", {"paraphrased_question": "France's capital?"})],
                  "x", role="retain")
    options = Task("options", "options", [QA("Pick one", "A", {"paraphrased_question": "Choose"})], "x")
    text = Task("privleak_forget", "text", [QA("", "Some text about Kalo.")], "x")
    return [text, forget, retain, options]


def test_chat_prompts_carry_the_user_turn_the_engine_was_given(tiny_tokenizer_factory):
    """The agent front is asked exactly the user turns of the prompts the engine generates, in the same
    order: every generation request of a qa/options item is the chat template around its question."""
    from unlearnkit.data.formatting import prompt_text
    from unlearnkit.evaluation.scoring import build_requests

    tok = tiny_tokenizer_factory()
    tasks = _tasks()
    req = build_requests(tasks, tok, EvalConfig(metrics=["rouge"]))
    assert [(g.task, g.item, g.key) for g in req.gen] == [
        (1, 0, "generated"), (1, 0, "generated_paraphrased_question"), (1, 1, "generated"), (2, 0, "generated"),
        (3, 0, "generated"), (3, 0, "generated_paraphrased_question")]
    assert [g.prompt.ids for g in req.gen] == [tok(prompt_text(tok, g.prompt.question), add_special_tokens=False)
                                               ["input_ids"] for g in req.gen]
    assert req.gen[1].prompt.question == tasks[1].items[0].extra["paraphrased_question"]


def test_agent_replies_fill_the_fields_the_engines_answers_fill():
    from unlearnkit.evaluation.measure import with_replies
    from unlearnkit.evaluation.scoring import qa_generation_prompts, task_results

    tasks = _tasks()[1:2]
    cfg = EvalConfig(metrics=["rouge"])
    keys = [(t, i, k) for t, task in enumerate(tasks) for i, r in enumerate(task.items)
            for k, _ in qa_generation_prompts(task, r)]
    texts = {key: f" reply {n} Utrecht " for n, key in enumerate(keys)}
    gen_out: dict = {}
    for (t, i, k), text in texts.items():
        gen_out.setdefault((t, i), {})[k] = text
    engine = task_results(tasks, gen_out, {}, cfg)
    blank = task_results(tasks, {}, {}, cfg)
    replaced = with_replies(blank, tasks, cfg, texts)
    assert replaced == engine


def test_policy_fingerprints_share_one_identity(tmp_path):
    """compare's stage keys and the evaluation's cache key both name the policy by its files'
    checksums, config and calibration (the keys they had before: cached results stay valid)."""
    from unlearnkit.compare.measure import policy_fingerprint
    from unlearnkit.evaluation.systems import policy_identity

    meta = {"files": {"index.faiss": "ab"}, "config": {"fpr": 0.1}, "calibration": {"threshold": 0.5},
            "targets": [{"name": "Kalo"}], "items": []}
    (tmp_path / "policy.json").write_text(json.dumps(meta))
    assert policy_identity(meta) == [meta["files"], meta["config"], meta["calibration"]]
    before = policy_fingerprint(str(tmp_path))
    assert before == json_digest([meta["files"], meta["config"], meta["calibration"]])
    meta["targets"].append({"name": "Ines"})        # in the checksummed files already: not keyed twice
    (tmp_path / "policy.json").write_text(json.dumps(meta))
    assert policy_fingerprint(str(tmp_path)) == before
    meta["calibration"]["threshold"] = 0.6
    (tmp_path / "policy.json").write_text(json.dumps(meta))
    assert policy_fingerprint(str(tmp_path)) != before
    before = policy_fingerprint(str(tmp_path))
    meta["targets"][0]["titles"] = ["Glass Rivers"]  # titles are in policy.json only: a rebuild that changes them
    (tmp_path / "policy.json").write_text(json.dumps(meta))
    assert policy_fingerprint(str(tmp_path)) != before
    assert policy_fingerprint(None) is None


def test_a_guarded_evaluation_loads_its_policy_once(tiny_dir, tiny_policy, guard_forget_set, tmp_path, monkeypatch):
    import unlearnkit.guard.policy as GP
    from unlearnkit.evaluation.harness import cached_measure

    loads = []
    real = GP.load_policy
    monkeypatch.setattr(GP, "load_policy", lambda *a, **k: loads.append(a[0]) or real(*a, **k))
    forget = tmp_path / "forget.jsonl"
    forget.write_text("".join(json.dumps({"question": r.question, "answer": r.answer}) + "\n" for r in guard_forget_set))
    cfg = EvalConfig(model=str(tiny_dir), benchmark="files", forget=f"file:{forget}", metrics=["probability"],
                     guard=str(tiny_policy))
    result = cached_measure(cfg, log=lambda *_: None, use_cache=False).result
    assert loads == [str(tiny_policy)]
    calibration = json.loads((tiny_policy / "policy.json").read_text())["calibration"]
    assert result.guard.calibration == calibration and result.config["guard"] == str(tiny_policy)


def test_the_graph_has_the_configs_nodes():
    from unlearnkit.agents.config import LOCAL_NODES, NODES, AgentConfig
    from unlearnkit.agents.graph import Pipeline

    pipeline = Pipeline(AgentConfig(), None, {n: object() for n in NODES})
    assert set(pipeline.graph.get_graph().nodes) - {"__start__", "__end__"} == set(NODES) | set(LOCAL_NODES)
    with pytest.raises(ValueError, match=r"no model for node\(s\) \['compose'\]"):
        Pipeline(AgentConfig(), None, {n: object() for n in NODES[:-1]})


def test_a_replayed_front_keeps_the_engines_numbers_and_raw_completions(tiny_tokenizer_factory):
    """A system that scores nothing (the agent front, replayed) answers chat prompts only: its replies replace
    the engine's qa generation fields, while the engine's knowmem completions and probabilities stand, also
    when the metrics need no teacher forcing at all."""
    from unlearnkit.evaluation.measure import measure
    from unlearnkit.evaluation.scoring import build_requests, task_results
    from unlearnkit.evaluation.systems import Replayed

    tok = tiny_tokenizer_factory()
    qa = Task("forget", "qa", [QA("Where was Kalo born?", "Kalo was born in Utrecht.")], "x")
    knowmem = Task("knowmem_forget", "knowmem", [QA("Where was Kalo born?", "Utrecht")], "x")
    tasks = [qa, knowmem]
    cfg = EvalConfig(metrics=["rouge"])
    engine = EvalResult("muse", {}, {}, {}, {}, task_results(tasks, {(0, 0): {"generated": "Utrecht, I think."},
                                                                 (1, 0): {"generated": "Utrecht"}}, {}, cfg))
    gen = build_requests(tasks, tok, cfg).gen
    front = Replayed(["I can't share that." if g.prompt.question else None for g in gen], "front")
    got = measure(front, tasks, cfg, tok, base=engine, log=lambda *_: None).tasks
    assert got["forget"].items[0].generated == "I can't share that."
    assert got["knowmem_forget"] == engine.tasks["knowmem_forget"]
    assert got["knowmem_forget"].aggregate["rougeL_f1"] == 1.0
    with pytest.raises(ValueError, match="needs its engine's result"):
        measure(front, tasks, cfg, tok, log=lambda *_: None)
