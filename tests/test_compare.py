"""`unlearn compare`: system names, failures and missing references, caching/resume, the report
(markdown, self-contained HTML opened in headless Chromium, JSON) and guarded teacher forcing."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from unlearnkit.compare import report as R
from unlearnkit.compare import run as RUN
from unlearnkit.compare.config import CompareConfig, parse_system
from unlearnkit.config import from_dict
from unlearnkit.evaluation.metrics import tofu as T
from unlearnkit.evaluation.results import EvalResult, ForgetQuality, QARecord, Summary, TaskResult, Utility
from unlearnkit.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def make_cfg(tmp_path, **over) -> CompareConfig:
    base = {"name": "t", "eval": str(tmp_path / "eval.yaml"), "target": "smollm2", "retain": "smollm2",
            "methods": {"ihl_fila": "configs/train/ihl_fila.yaml"}, "guard": {"forget": "synth/forget"},
            "systems": ["target", "retain", "ihl_fila", "target+guard", "target+agents+guard"],
            "out_dir": str(tmp_path / "out")}
    base.update(over)
    cfg = from_dict(CompareConfig, base)
    cfg.validate()
    return cfg


# ----------------------------------------------------------------------------- config
def test_system_names(tmp_path):
    cfg = make_cfg(tmp_path)
    s = parse_system("target+agents+guard", cfg)
    assert (s.name, s.base, s.guard, s.agents, s.kind) == ("target+guard+agents", "target", True, True, "stack")
    assert parse_system("ihl_fila+guard", cfg).kind == "stack"
    assert parse_system("target+guard", cfg).kind == "guard"
    assert parse_system("ihl_fila", cfg).kind == "weight"
    assert parse_system("retain", cfg).kind == "reference"
    with pytest.raises(ConfigError, match=r"unknown system 'npo'.*valid systems: \['target', 'retain', 'ihl_fila'"):
        parse_system("npo", cfg)
    with pytest.raises(ConfigError, match=r"'shield' is not one of \['guard', 'agents'\]"):
        parse_system("target+shield", cfg)
    with pytest.raises(ConfigError, match="needs a guard policy"):
        make_cfg(tmp_path, guard=None)
    with pytest.raises(ConfigError, match="listed twice"):
        make_cfg(tmp_path, systems=["target", "target"])
    with pytest.raises(ConfigError, match=r"unknown attack\(s\) \['x'\]; valid attacks"):
        make_cfg(tmp_path, attacks={"names": ["x"]})
    with pytest.raises(ConfigError, match="reserved"):
        make_cfg(tmp_path, methods={"guard": "x.yaml"})


def test_guard_variants_are_system_modifiers(tmp_path):
    cfg = make_cfg(tmp_path, guard={"forget": "synth/forget", "set": ["top_k=2"],
                                    "variants": {"guard_calibrated": ["mode=calibrated"]}},
                   systems=["target+guard", "ihl_fila+guard_calibrated", "target+agents+guard_calibrated"])
    s = parse_system("ihl_fila+guard_calibrated", cfg)
    assert (s.name, s.guard, s.guard_variant, s.kind) == ("ihl_fila+guard_calibrated", True, "guard_calibrated", "stack")
    assert parse_system("target+agents+guard_calibrated", cfg).name == "target+guard_calibrated+agents"
    assert cfg.guard.variant(s.guard_variant).set == ["top_k=2", "mode=calibrated"]
    assert cfg.guard.variant(None) is cfg.guard and parse_system("target+guard", cfg).guard_variant is None
    with pytest.raises(ConfigError, match="one guard per system"):
        parse_system("target+guard+guard_calibrated", cfg)
    with pytest.raises(ConfigError, match="already name a system part"):
        make_cfg(tmp_path, guard={"forget": "synth/forget", "variants": {"agents": ["mode=calibrated"]}})


def test_shipped_compare_configs_load():
    for path in sorted((ROOT / "configs/compare").glob("*.yaml")):
        cfg = RUN.load_compare_config(str(path))
        assert cfg.systems and Path(ROOT / cfg.eval).is_file(), path
        for ref in [cfg.target, cfg.retain, *cfg.methods.values()]:
            if ref and (ref.startswith("run:") or ref.endswith(".yaml")):
                assert (ROOT / ref.removeprefix("run:")).is_file(), ref


def test_unknown_key_in_compare_config(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump({"name": "x", "eval": "e", "target": "t", "systems": ["target"], "sytems": []}))
    with pytest.raises(ConfigError, match="sytems"):
        RUN.load_compare_config(str(f))


# ----------------------------------------------------------------------------- orchestration (fake measuring)
def _fake_result(system, truth_ratios, leak, neighbour_rouge, fail=None):
    if fail:
        raise RuntimeError(fail)
    items = [QARecord("q", "a", truth_ratio=t) for t in truth_ratios]
    forget = TaskResult("qa", "forget", "test", "f", {"rougeL_recall": leak}, items)
    cats = {"paraphrase": {"n": 2, "leak_rate": leak, "rouge": leak, "keywords": leak, "refusal_rate": 0.0}}
    cats["all"] = cats["paraphrase"]
    nb = {"paraphrase": {"n": 1, "leak_rate": 0.5, "rouge": neighbour_rouge, "keywords": 0.5, "refusal_rate": 0.0}}
    nb["all"] = nb["paraphrase"]
    return {"status": "ok", "system": system.name, "kind": system.kind, "base": system.base, "checkpoint": None,
            "training": {"train_seconds": 12.0}, "metrics": EvalResult(tasks={"forget": forget}),
            "attacks": {"by_category": {"forget": cats, "neighbour": nb}, "records": [],
                        "serving": {"tokens_per_s": 100.0, "latency_median_s": 0.5}}}


@pytest.fixture
def fake_world(tmp_path, monkeypatch):
    (tmp_path / "eval.yaml").write_text(yaml.safe_dump({"benchmark": "synthetic", "metrics": ["probability"]}))
    monkeypatch.setattr(RUN, "attack_sets", lambda cfg, ecfg: ([], [], []))
    calls = []

    def fake_measure(system, cfg, ecfg, tasks, forget, probes, stages, work, log=print):
        calls.append(system.name)
        spec = {"target": ([0.2, 0.3, 0.25], 0.9, 0.8, None), "retain": ([0.6, 0.7, 0.65], 0.2, 0.8, None),
                "ihl_fila": ([0.55, 0.66, 0.7], 0.25, 0.78, None),
                "target+guard": ([0.5, 0.6, 0.7], 0.1, 0.79, None),
                "target+guard+agents": (None, None, None, "the agent server exited with code 1 before answering")}
        tr, leak, nb, fail = spec[system.name]
        return _fake_result(system, tr, leak, nb, fail)

    monkeypatch.setattr(RUN, "measure_system", fake_measure)
    return calls


def test_failed_system_is_reported_and_the_others_measured(tmp_path, fake_world):
    doc = RUN.run_compare(make_cfg(tmp_path))
    assert fake_world == ["target", "retain", "ihl_fila", "target+guard", "target+guard+agents"]
    failed = doc["systems"]["target+guard+agents"]
    assert failed["status"] == "failed" and "exited with code 1" in failed["reason"]
    assert (tmp_path / "out/logs/target+guard+agents.error.log").read_text().count("Traceback") == 1
    fq = {k: v["summary"]["forget_quality"] for k, v in doc["systems"].items() if v["status"] == "ok"}
    assert fq["retain"] == pytest.approx(1.0)
    assert fq["target"] < 0.2 < fq["ihl_fila"]
    on_disk = json.loads((tmp_path / "out/results.json").read_text())
    assert on_disk["systems"]["target+guard+agents"]["reason"] == failed["reason"]
    md = (tmp_path / "out/report.md").read_text()
    assert "FAILED" in md and "exited with code 1" in md and "## Failed systems" in md
    # target+guard within the tolerance of retain's leak rate and keeps >= 90% of the neighbours: marked
    reach = R.reaches_retain(doc)
    assert reach["target+guard"]["paraphrase"] and not reach["target"]["paraphrase"]


def test_missing_retain_model_leaves_forget_quality_empty_with_reason(tmp_path, fake_world):
    doc = RUN.run_compare(make_cfg(tmp_path, retain=None, systems=["target", "ihl_fila"]))
    for name in ("target", "ihl_fila"):
        s = doc["systems"][name]["summary"]
        assert s["forget_quality"] is None and "no retain model" in s["forget_quality_reason"]
    assert "forget quality of every system is empty: no retain model" in (tmp_path / "out/report.md").read_text()


def test_empty_forget_quality_is_one_note_per_reason():
    from types import SimpleNamespace as Row

    from unlearnkit.compare.report import _empty_forget_quality

    rows = [Row(system="a", ok=True, forget_quality=None, forget_quality_reason="no truth ratios"),
            Row(system="b", ok=True, forget_quality=0.5, forget_quality_reason=None),
            Row(system="c", ok=True, forget_quality=None, forget_quality_reason="no truth ratios"),
            Row(system="d", ok=True, forget_quality=None, forget_quality_reason="a black box"),
            Row(system="e", ok=False, forget_quality=None, forget_quality_reason=None)]
    assert _empty_forget_quality(rows) == ["forget quality of a, c is empty: no truth ratios",
                                           "forget quality of d is empty: a black box"]
    assert _empty_forget_quality(rows[:1] + rows[2:3]) == ["forget quality of every system is empty: no truth ratios"]
    assert _empty_forget_quality(rows[:1] + rows[2:3] + rows[4:]) == [
        "forget quality of every measured system is empty: no truth ratios"]      # e failed


def test_failed_retain_model_gives_its_reason(tmp_path, monkeypatch, fake_world):
    real = RUN.measure_system

    def failing_retain(system, *a, **k):
        if system.name == "retain":
            raise OSError("retain checkpoint unreadable")
        return real(system, *a, **k)

    monkeypatch.setattr(RUN, "measure_system", failing_retain)
    doc = RUN.run_compare(make_cfg(tmp_path, systems=["target", "retain"]))
    s = doc["systems"]["target"]["summary"]
    assert s["forget_quality"] is None
    assert s["forget_quality_reason"] == "the retain model failed: OSError: retain checkpoint unreadable"


def test_only_subset_must_be_in_the_config(tmp_path, fake_world):
    cfg = make_cfg(tmp_path)
    assert RUN.check_only(["target+agents+guard"], cfg) == ["target+guard+agents"]
    with pytest.raises(ConfigError, match="not in this comparison"):
        RUN.check_only(["retain+guard"], cfg)


def test_seeds_train_and_measure_each_weight_level_method_again(tmp_path, monkeypatch, fake_world):
    from unlearnkit.compare import seeds as SEEDS

    trained = []
    ratios = {3: [0.6, 0.7, 0.65], 5: [0.2, 0.3, 0.25]}   # seed 3 forgets like the retain model, seed 5 not at all

    def fake_train(config, seed, log=print):
        trained.append((Path(config).stem, seed))
        return str(tmp_path / f"seed{seed}")

    def fake_measure(ecfg, path, log=print):
        items = [QARecord("q", "a", truth_ratio=t) for t in ratios[int(path[-1])]]
        return EvalResult(tasks={"forget": TaskResult("qa", "forget", "test", "f", {}, items)})

    monkeypatch.setattr(SEEDS, "train_seed", fake_train)
    monkeypatch.setattr(SEEDS, "measure_seed", fake_measure)
    doc = RUN.run_compare(make_cfg(tmp_path, seeds=[0, 3, 5]))
    assert trained == [("ihl_fila", 3), ("ihl_fila", 5)]          # seed 0 is the config's own run
    runs = doc["systems"]["ihl_fila"]["seeds"]
    assert [r["seed"] for r in runs] == [0, 3, 5]
    assert runs[0]["forget_quality"] == doc["systems"]["ihl_fila"]["summary"]["forget_quality"]
    assert runs[1]["forget_quality"] == pytest.approx(1.0) and runs[2]["forget_quality"] < 0.2
    assert all("seeds" not in doc["systems"][n] for n in ("target", "retain", "target+guard"))
    md = (tmp_path / "out/report.md").read_text()
    table = md.split("## Spread over training seeds")[1].split("##")[0]
    fq = [r["forget_quality"] for r in runs]
    mean, sd = sum(fq) / 3, (sum((x - sum(fq) / 3) ** 2 for x in fq) / 2) ** 0.5
    assert f"| ihl_fila | 0, 3, 5 | {mean:.4f} ± {sd:.4f} |" in table


def test_a_failing_seed_spread_is_reported_beside_the_measured_run(tmp_path, monkeypatch, fake_world):
    def broken(config):
        raise RuntimeError("disk full")

    monkeypatch.setattr(RUN, "config_seed", broken)   # the method's own seed cannot be read: no spread at all
    doc = RUN.run_compare(make_cfg(tmp_path, seeds=[1]))
    assert doc["systems"]["ihl_fila"]["status"] == "ok" and "forget_quality" in doc["systems"]["ihl_fila"]["summary"]
    assert doc["systems"]["ihl_fila"]["seeds_error"] == "RuntimeError: disk full"
    assert "| ihl_fila | failed: RuntimeError: disk full |" in (tmp_path / "out/report.md").read_text()


def test_a_failing_seed_leaves_the_spread_of_the_others(tmp_path, monkeypatch, fake_world):
    from unlearnkit.compare import seeds as SEEDS

    def train_or_fail(config, seed, log=print):
        if seed == 5:
            raise RuntimeError("out of memory\ntraceback ...")
        return str(tmp_path / f"seed{seed}")

    def fake_measure(ecfg, path, log=print):
        return EvalResult(tasks={"forget": TaskResult("qa", "forget", "test", "f", {}, [
            QARecord("q", "a", truth_ratio=t) for t in (0.6, 0.7, 0.65)])})

    monkeypatch.setattr(SEEDS, "train_seed", train_or_fail)
    monkeypatch.setattr(SEEDS, "measure_seed", fake_measure)
    doc = RUN.run_compare(make_cfg(tmp_path, seeds=[0, 3, 5]))
    runs = doc["systems"]["ihl_fila"]["seeds"]
    assert "seeds_error" not in doc["systems"]["ihl_fila"]
    assert [(r["seed"], r["error"]) for r in runs] == [(0, None), (3, None), (5, "RuntimeError: out of memory")]
    assert runs[2]["forget_quality"] is None and runs[1]["forget_quality"] == pytest.approx(1.0)
    fq = [runs[0]["forget_quality"], runs[1]["forget_quality"]]
    mean, sd = sum(fq) / 2, (sum((x - sum(fq) / 2) ** 2 for x in fq)) ** 0.5
    table = (tmp_path / "out/report.md").read_text().split("## Spread over training seeds")[1].split("##")[0]
    assert f"| ihl_fila | 0, 3, 5 (failed: RuntimeError: out of memory) | {mean:.4f} ± {sd:.4f} |" in table


@pytest.mark.parametrize("seeds, message", [([1, 1], "must be distinct non-negative integers"),
                                             ([-2], "must be distinct non-negative integers"),
                                             ([True], r"seeds\[0\]: expected an integer")])
def test_bad_seeds_are_refused(tmp_path, seeds, message):
    with pytest.raises(ConfigError, match=message):
        make_cfg(tmp_path, seeds=seeds)


def test_stage_cache_resumes_without_remeasuring(tmp_path):
    from unlearnkit.compare.measure import _cached

    made = []
    make = lambda: made.append(1) or {"replies": ["a"]}  # noqa: E731
    assert _cached("attacks", {"k": 1}, make, log=lambda *_: None) == {"replies": ["a"]}
    assert _cached("attacks", {"k": 1}, make, log=lambda *_: None) == {"replies": ["a"]}
    assert len(made) == 1
    _cached("attacks", {"k": 2}, make, log=lambda *_: None)
    assert len(made) == 2


def test_agent_replies_replace_generation_metrics_only():
    from unlearnkit.evaluation.measure import with_replies
    from unlearnkit.data.records import QA
    from unlearnkit.evaluation.benchmarks import Task
    from unlearnkit.evaluation.config import EvalConfig
    from unlearnkit.evaluation.scoring import qa_generation_prompts

    task = Task("forget", "qa", [QA("Where was Kalo born?", "Kalo was born in Utrecht.",
                                    {"paraphrased_question": "Kalo's birthplace?"})], "x")
    record = QARecord("Where was Kalo born?", "Kalo was born in Utrecht.", rougeL_recall=1.0, probability=0.9)
    engine = {"forget": TaskResult("qa", "forget", "x", "f", {}, [record])}
    assert [k for k, _ in qa_generation_prompts(task, task.items[0])] == ["generated", "generated_paraphrased_question"]
    out = with_replies(engine, [task], EvalConfig(metrics=["probability", "rouge"]),
                       {(0, 0, "generated"): "I'm sorry.", (0, 0, "generated_paraphrased_question"): "Utrecht."})
    item = out["forget"].items[0]
    assert item.rougeL_recall == 0.0 and item.probability == 0.9          # probability: the engine's
    assert out["forget"].aggregate["probability"] == 0.9
    assert 0 < item.rougeL_recall_paraphrased_question < 1
    assert engine["forget"].items[0] is record and record.rougeL_recall == 1.0         # input untouched


# ----------------------------------------------------------------------------- report
def report_doc():
    from unlearnkit.compare.config import System

    doc = {"name": "unit", "provenance": {"config": {"name": "unit"}, "versions": {"torch": "x"},
                                          "data": {"forget": {"source": "s", "items": 2, "fingerprint": "f"}}},
           "systems": {}}
    for name, tr, leak, nb in (("target", [0.2, 0.3, 0.25], 0.9, 0.8), ("retain", [0.6, 0.7, 0.65], 0.2, 0.8),
                               ("ihl_fila", [0.55, 0.66, 0.7], 0.25, 0.5)):
        res = _fake_result(System(name, name if name != "ihl_fila" else "ihl_fila"), tr, leak, nb)
        res["summary"] = Summary(Utility(0.4, {}), ForgetQuality(0.5 if name != "target" else 1e-5, None,
                                                                  truth_ratio=T.truth_ratio_profile(tr)))
        doc["systems"][name] = RUN._compact(RUN._system_json(res))
    doc["systems"]["broken"] = {"status": "failed", "kind": "weight", "reason": "ValueError: bad <config>"}
    return doc


def test_report_files(tmp_path):
    paths = R.write_report(report_doc(), tmp_path)
    md = paths["md"].read_text()
    assert md.startswith("# Unlearning comparison: unit")
    assert "| target | reference | 1.0e-05 |" in md and "ValueError: bad <config>" in md
    assert "![leak_rate_by_attack](plots/leak_rate_by_attack.png)" in md
    for png in ("forget_quality_vs_utility.png", "leak_rate_by_attack.png", "cost_per_system.png"):
        assert (tmp_path / "plots" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = paths["html"].read_text()
    assert page.count("<img") == 3 and page.count("data:image/png;base64,") == 3
    assert "src='http" not in page and "<link" not in page and "<script" not in page   # self-contained
    assert "bad &lt;config&gt;" in page
    assert "| target | 1.0e-05 | — | 0.250 | 0.225 – 0.275 | 0.00 |" in md      # the truth-ratio reading
    # ihl_fila lost 37% of the target's neighbour ROUGE-L: it does not count as reaching the retain rate
    assert R.reaches_retain(report_doc())["ihl_fila"]["paraphrase"] is False


CHECK = """<script>
window.addEventListener('load', () => {
  const imgs = [...document.images];
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0 && i.getBoundingClientRect().width > 0).length;
  const rows = [...document.querySelectorAll('table')].map(t => t.rows.length);
  const p = document.createElement('p'); p.id = 'render-check';
  p.textContent = `images=${imgs.length} rendered=${ok} tables=${rows.join(',')}`;
  document.body.appendChild(p);
});
</script>"""


def test_report_html_renders_in_headless_chromium(tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    assert browser, "Debian's chromium is not installed: `make setup` installs it (apt-get install chromium)"
    R.write_report(report_doc(), tmp_path)
    shutil.rmtree(tmp_path / "plots")          # the page must not need the files beside it
    page = (tmp_path / "report.html").read_text().replace("</body>", CHECK + "</body>")
    (tmp_path / "check.html").write_text(page)
    out = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000",
                          "--dump-dom", (tmp_path / "check.html").as_uri()], capture_output=True, text=True, timeout=120)
    found = re.search(r"images=(\d+) rendered=(\d+) tables=([\d,]+)", out.stdout)
    assert found, out.stderr[-2000:]
    images, rendered, tables = int(found[1]), int(found[2]), [int(n) for n in found[3].split(",")]
    assert images == rendered == 3
    assert len(tables) >= 5 and all(n >= 2 for n in tables)         # header + at least one row each


# ----------------------------------------------------------------------------- guarded teacher forcing
def test_guarded_logits_follow_the_decoded_context():
    from unlearnkit.guard.decode import RequestGuard
    from unlearnkit.guard.scoring import FLOOR, guarded_logits
    from unlearnkit.guard.trie import TokenTrie

    guard = RequestGuard(TokenTrie([[3, 4]]), penalty=torch.tensor([0.0, -2.0, 0, 0, 0, 0]))
    logits = torch.zeros(3, 6)
    out = guarded_logits([guard, None], logits, torch.tensor([0, 0, 1]), [[], [3], [3]])
    assert out[0, 4] == 0 and out[0, 1] == -2.0                       # 4 allowed before 3 was decoded
    assert out[1, 4] == pytest.approx(-FLOOR) and out[1, 1] == -2.0   # blocked after 3, finite
    assert torch.equal(out[2], logits[2])                             # unguarded item untouched
    assert torch.isfinite(out).all()


def test_teacher_forced_probability_through_the_guard(tiny_dir, tiny_policy, guard_forget_set, tmp_path):
    """'The probability this system assigns': forget answers lose probability through the guard,
    prompts it does not flag keep theirs exactly."""
    from unlearnkit.evaluation.config import EvalConfig
    from unlearnkit.evaluation.harness import cached_measure

    forget = tmp_path / "forget.jsonl"
    forget.write_text("".join(json.dumps({"question": r.question, "answer": r.answer}) + "\n" for r in guard_forget_set))
    retain = tmp_path / "retain.jsonl"
    retain.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in (
        ("How many legs does a spider have?", "A spider has eight legs."),
        ("What is the boiling point of water?", "Water boils at 100 degrees Celsius at sea level."))))
    base = EvalConfig(model=str(tiny_dir), benchmark="files", forget=f"file:{forget}", retain=f"file:{retain}",
                      metrics=["probability"])
    plain = cached_measure(base, log=lambda *_: None).result
    guarded = cached_measure(EvalConfig(**{**base.__dict__, "guard": str(tiny_policy)}), log=lambda *_: None).result
    for p, g in zip(plain.tasks["forget"].items, guarded.tasks["forget"].items):
        assert g.probability < 0.01 * p.probability, (p.question, p.probability, g.probability)
    for p, g in zip(plain.tasks["retain"].items, guarded.tasks["retain"].items):
        assert g.probability == pytest.approx(p.probability, rel=1e-6)


# ----------------------------------------------------------------------------- end to end (tiny model, real vLLM)
@pytest.mark.slow
def test_compare_end_to_end_on_a_tiny_model(tmp_path, vllm_sized_model, guard_forget_set, monkeypatch):
    """`unlearn compare` through the CLI: the target and the guarded target measured through vLLM,
    the relearning attack on the weights, a method that cannot be built reported as failed, no
    retain model -> forget quality empty with the reason; a second run re-reads everything."""
    from unlearnkit.cli import main

    monkeypatch.chdir(ROOT)
    forget = tmp_path / "forget.jsonl"
    forget.write_text("".join(json.dumps(r.to_json()) + "\n" for r in guard_forget_set))
    retain = tmp_path / "retain.jsonl"
    retain.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in (
        ("Who is the poet Ada Quill?", "Ada Quill is a Welsh poet born in Cardiff in 1970."),
        ("What did Ada Quill write first?", "Ada Quill's first book was \"Salt Hours\"."),
        ("Where does Ada Quill live?", "Ada Quill lives in Cardiff."))))
    (tmp_path / "eval.yaml").write_text(yaml.safe_dump({
        "benchmark": "files", "forget": f"file:{forget}", "retain": f"file:{retain}",
        "metrics": ["probability", "rouge"], "max_new_tokens": 8}))
    cfg = {"name": "tiny", "eval": str(tmp_path / "eval.yaml"), "target": str(vllm_sized_model),
           "methods": {"broken": str(tmp_path / "missing.yaml")},
           "guard": {"forget": f"file:{forget}", "set": ["fpr=0.2"]},
           "systems": ["target", "target+guard", "broken"],
           "attacks": {"names": ["paraphrase", "jailbreak", "cloze", "relearn"], "forget_items": None, "neighbours": 1,
                       "max_new_tokens": 8, "relearn_epochs": 1},
           "latency_requests": 2, "out_dir": str(tmp_path / "out")}
    (tmp_path / "cmp.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["compare", "--config", str(tmp_path / "cmp.yaml")]) == 1       # one system failed
    doc = json.loads((tmp_path / "out/results.json").read_text())
    assert doc["systems"]["broken"]["status"] == "failed" and "missing.yaml" in doc["systems"]["broken"]["reason"]
    for name in ("target", "target+guard"):
        res = doc["systems"][name]
        assert res["status"] == "ok", res
        assert res["summary"]["forget_quality"] is None and "no retain model" in res["summary"]["forget_quality_reason"]
        by = res["attacks"]["by_category"]
        assert set(by["forget"]) == {"paraphrase", "jailbreak", "cloze", "all"} and by["neighbour"]["all"]["n"] >= 2
        assert res["attacks"]["serving"]["tokens_per_s"] > 0 and res["attacks"]["serving"]["latency_requests"] == 2
    assert doc["systems"]["target"]["relearn"]["probed"] == 2
    assert "skipped" in doc["systems"]["target+guard"]["relearn"]
    # through the guard every forget probe is flagged; the guarded system's forget answers lose probability
    assert doc["systems"]["target+guard"]["guard_flagged_rate"]["forget/generated"] == 1.0
    assert (doc["systems"]["target+guard"]["aggregates"]["forget"]["probability"]
            < doc["systems"]["target"]["aggregates"]["forget"]["probability"])
    assert "data:image/png;base64," in (tmp_path / "out/report.html").read_text()

    # resumed / re-run: nothing is generated or trained again
    import unlearnkit.evaluation.generation as G
    import unlearnkit.training.run as T

    def refuse(*a, **k):
        raise AssertionError("should have been cached")

    monkeypatch.setattr(G, "generate_vllm_timed", refuse)
    monkeypatch.setattr(T, "run_training", refuse)
    assert main(["compare", "--config", str(tmp_path / "cmp.yaml"), "--systems", "target,target+guard"]) == 0
    again = json.loads((tmp_path / "out/results.json").read_text())
    assert again["systems"]["target"]["attacks"] == doc["systems"]["target"]["attacks"]


def test_report_shows_the_weights_attacks():
    """The quantization table (leak / answer probability per variant, recovery over the unquantized
    system, skipped systems with their reason) and the benign relearning column."""
    doc = report_doc()
    rows = lambda leaks, probs: {label: {"n": 4, "leak_rate": lk, "answer_probability": p}  # noqa: E731
                                 for label, lk, p in zip(("unquantized", "int8-channel", "int4-channel"), leaks, probs)}
    doc["systems"]["ihl_fila"]["quantize"] = {"probed": 4, "guard": False, "rows": rows((0.25, 0.25, 0.75),
                                                                                       (0.02, 0.021, 0.08))}
    doc["systems"]["target"]["quantize"] = {"skipped": "the agent front is served over HTTP"}
    doc["systems"]["ihl_fila"]["benign_relearn"] = {"taught": 8, "probed": 4, "train_seconds": 3.0,
                                                    "before": {"leak_rate": 0.25}, "after": {"leak_rate": 0.5}}
    by_title = {t[0]: t for t in R.tables(doc)}
    title, header, body, note = by_title["Quantization attack (forget questions): leak rate / answer probability"]
    assert header == ["system", "unquantized", "int8-channel", "int4-channel", "max leak rise", "max P(answer) ratio"]
    assert body == [["ihl_fila", "0.25 / 0.0200", "0.25 / 0.0210", "0.75 / 0.0800", "0.50", "4.00"]]
    assert "Skipped: target: the agent front is served over HTTP" in note
    leak = by_title["Leak rate per attack category (forget items)"]
    assert leak[1][-2:] == ["relearn", "benign_relearn"]
    assert [r[-1] for r in leak[2]] == ["n/a", "n/a", "0.50"]
    assert all(t[0].startswith(R.ATTACK_TABLES) for t in R.tables(doc)[1:4])
    assert "benign_relearn" not in by_title.get("Leak rate per attack category (forget items)", [""])[0]
    assert "Quantization attack" not in str([t[0] for t in R.tables(report_doc())])


def test_guard_modes_make_a_dial_table_and_plot():
    """Guarded systems that record their mode: one dial row each (strict last), and the dial plot."""
    import copy
    import json

    from unlearnkit.compare.report import plots, tables

    doc = json.loads((ROOT / "tests/data/report/compare_unit.results.json").read_text())
    assert not [t for t in tables(doc) if t[0].startswith("Guard modes")]   # nothing recorded: no table
    ok = [n for n, r in doc["systems"].items() if r.get("status") == "ok"]
    strict, soft = copy.deepcopy(doc["systems"][ok[0]]), copy.deepcopy(doc["systems"][ok[0]])
    strict["guard"] = {"policy": "p", "mode": "strict", "soft_mask": None}
    soft["guard"] = {"policy": "q", "mode": "calibrated", "soft_mask": 6.875}
    doc["systems"] = {"target+guard": strict, "target+guard_calibrated": soft}
    (dial,) = [t for t in tables(doc) if t[0].startswith("Guard modes")]
    assert [row[:3] for row in dial[2]] == [["target+guard_calibrated", "calibrated", "6.875"],
                                            ["target+guard", "strict", "withheld"]]
    assert "guard_dial.png" in plots(doc)


class _FakeFront:
    """Stands in for `unlearn serve --agents` (compare/endpoint.py AgentServer): refuses what names Kalo."""
    calls: list = []

    def __init__(self, *args, **kwargs):
        self.start_s, self.url = 0.5, "http://fake/v1"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def ask(self, prompt, max_tokens=128):
        _FakeFront.calls.append((prompt, max_tokens))
        refused = "Kalo" in prompt
        return {"status": 200, "text": "I can't share that." if refused else "It is Utrecht, I think.",
                "unlearn": {"path": "refused" if refused else "passthrough", "llm_calls": 3 if refused else None},
                "seconds": 0.01}

    def ask_many(self, prompts, budgets, workers=8, progress=None):
        out = [self.ask(p, b) for p, b in zip(prompts, budgets)]
        if progress:
            progress(len(out))
        return out


def test_the_agent_front_is_measured_through_the_one_path_and_replayed_from_cache(tmp_path, tiny_dir, tiny_policy,
                                                                                  monkeypatch):
    """The agent system's metric replies replace the engine's generation fields (its probabilities stay the
    engine's), its probes are scored and timed, and a second measurement replays the recorded replies
    without a server."""
    import unlearnkit.compare.endpoint as E
    from unlearnkit.compare.config import System
    from unlearnkit.compare.measure import agent_system
    from unlearnkit.evaluation.attacks import Probe
    from unlearnkit.evaluation.benchmarks import build_tasks
    from unlearnkit.evaluation.config import EvalConfig
    from unlearnkit.evaluation.harness import cached_measure

    forget = tmp_path / "forget.jsonl"
    forget.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in (
        ("Where was Kalo born?", "Kalo was born in Utrecht."), ("Where is the Dom tower?", "It is in Utrecht."))))
    ecfg = EvalConfig(model=str(tiny_dir), benchmark="files", forget=f"file:{forget}", metrics=["probability", "rouge"],
                      engine="transformers", max_new_tokens=4)
    tasks = build_tasks(ecfg)
    engine = cached_measure(ecfg, log=lambda *_: None).result
    probes = [Probe("jailbreak", "x", "forget", 0, "Tell me where Kalo was born", "Kalo was born in Utrecht.",
                    ("Utrecht",))]
    cfg = from_dict(CompareConfig, {"name": "t", "eval": "e", "target": str(tiny_dir), "systems": ["target"],
                                    "attacks": {"max_new_tokens": 5}, "latency_requests": 1})
    monkeypatch.setattr(E, "AgentServer", _FakeFront)
    _FakeFront.calls = []
    system = System("target+agents", "target", agents=True)
    got = agent_system(system, str(tiny_dir), str(tiny_policy), engine, tasks, ecfg, probes, cfg, tmp_path)
    items = got["metrics"].tasks["forget"].items
    assert [it.generated for it in items] == ["I can't share that.", "It is Utrecht, I think."]
    assert [it.probability for it in items] == [it.probability for it in engine.tasks["forget"].items]
    assert items[1].rougeL_recall > 0 == items[0].rougeL_recall
    assert got["attacks"].scores.rates("forget", "all").leak_rate == 0.0
    serving = got["attacks"].serving
    assert serving.routes == {"refused": 1} and serving.llm_calls_per_flagged == 3 and serving.latency_requests == 1
    assert sorted(set(_FakeFront.calls)) == sorted({("Where was Kalo born?", 4), ("Where is the Dom tower?", 4),
                                                    ("Tell me where Kalo was born", 5)})
    monkeypatch.setattr(E, "AgentServer", lambda *a, **k: pytest.fail("the replies are cached"))
    again = agent_system(system, str(tiny_dir), str(tiny_policy), engine, tasks, ecfg, probes, cfg, tmp_path)
    assert again == got


def test_each_measuring_stage_is_timed_in_the_order_run_and_tabled(tmp_path, monkeypatch):
    import time

    from unlearnkit.compare import build as B
    from unlearnkit.compare import measure as M
    from unlearnkit.compare import sampling as S
    from unlearnkit.compare.report_tables import stage_table
    from unlearnkit.compare.results import SystemResult

    monkeypatch.setattr(B, "checkpoint", lambda system, cfg, log=print: str(tmp_path))
    monkeypatch.setattr(B, "run_record", lambda path: {"train_seconds": 1.0})
    monkeypatch.setattr(M, "engine_system", lambda *a, **k: (time.sleep(0.3), ({}, {}))[1])
    monkeypatch.setattr(M, "WEIGHT_ATTACKS", {"relearn": lambda t: time.sleep(0.2)})
    monkeypatch.setattr(S, "SAMPLING_ATTACKS", {"leak_at_k": lambda t: None})
    cfg = make_cfg(tmp_path, attacks={"names": ["leak_at_k", "paraphrase", "relearn"]})
    out = RUN.measure_system(parse_system("target", cfg), cfg, None, [], [], [], ["metrics"], tmp_path)
    assert list(out["stage_seconds"]) == ["checkpoint", "metrics and prompt attacks", "leak_at_k", "relearn"]
    assert out["stage_seconds"]["metrics and prompt attacks"] >= 0.3 and out["stage_seconds"]["relearn"] >= 0.2
    assert out["stage_seconds"]["leak_at_k"] < 0.2
    read_back = SystemResult.from_json("target", json.loads(json.dumps(RUN._compact(out))))
    guarded = SystemResult.from_json("target+guard", {"status": "ok", "stage_seconds": {
        "checkpoint": 0.0, "guard": 2.0, "metrics and prompt attacks": 9.0}})
    [(_, header, rows, _)] = stage_table({"target": read_back, "target+guard": guarded})
    assert header == ["system", "checkpoint", "guard", "metrics and prompt attacks", "leak_at_k", "relearn"]
    assert rows[0][0] == "target" and rows[0][3] == R._f(out["stage_seconds"]["metrics and prompt attacks"], 0)
    assert rows[0][2] == R._f(None, 0) and rows[1][2] == R._f(2.0, 0)
