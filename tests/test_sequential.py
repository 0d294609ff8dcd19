"""Sequential deletion requests on the tiny model: two people of the synthetic set forgotten in turn,
request 2 trained from request 1's checkpoint (`run:`), measured after each, the report's table and
plot; a re-run reuses everything; bad `sequential:` sections are refused."""

import json
from pathlib import Path

import pytest
import yaml

from unlearnkit.compare.run import load_compare_config
from unlearnkit.errors import ConfigError

FORGET, RETAIN = "synth/forget?people=4&forget=2", "synth/retain?people=4&forget=2"


def quiet(*_):
    pass


def write_configs(tmp_path, tiny_dir, **sequential):
    (tmp_path / "eval.yaml").write_text(yaml.safe_dump({
        "model": str(tiny_dir), "benchmark": "synthetic", "forget": FORGET, "retain": RETAIN, "engine": "transformers",
        "dtype": "float32", "max_new_tokens": 4, "metrics": ["probability", "rouge", "truth_ratio", "forget_quality",
                                                              "model_utility"]}))
    (tmp_path / "ihl.yaml").write_text(yaml.safe_dump({
        "model": str(tiny_dir), "output_dir": str(tmp_path / "unused"), "mode": "full", "method": {"name": "grad_ascent"},
        "data": {"forget": FORGET, "retain": RETAIN, "max_length": 96},
        "optim": {"max_steps": 4, "batch_size": 4, "lr": 3e-3, "precision": "fp32", "save_steps": -1,
                  "logging_steps": 1}}))
    cfg = {"name": "seq", "eval": str(tmp_path / "eval.yaml"), "target": str(tiny_dir), "retain": str(tiny_dir),
           "methods": {"ihl": str(tmp_path / "ihl.yaml")}, "systems": ["target"], "out_dir": str(tmp_path / "out"),
           "sequential": sequential or {"method": "ihl", "split": FORGET}}
    (tmp_path / "cmp.yaml").write_text(yaml.safe_dump(cfg))
    return str(tmp_path / "cmp.yaml")


def test_two_requests_chain_and_are_measured_after_each(tmp_path, tiny_dir, monkeypatch):
    from unlearnkit.compare.sequential import run_sequential
    from unlearnkit.data.sources import load_spec
    from unlearnkit.training.cache import resolve_model

    cfg = load_compare_config(write_configs(tmp_path, tiny_dir))
    doc = run_sequential(cfg, log=quiet)
    work = tmp_path / "out" / "sequential"
    people = list(dict.fromkeys(r.extra["person"] for r in load_spec(FORGET)))
    assert list(doc["systems"]) == ["target", "ihl@1", "ihl@2"]
    # the chain: request 1 starts from the target, request 2 from request 1's checkpoint
    c1, c2 = (yaml.safe_load((work / f"ihl-request{k}.yaml").read_text()) for k in (1, 2))
    assert c1["model"] == str(tiny_dir) and c2["model"] == f"run:{work / 'ihl-request1.yaml'}"
    assert resolve_model(c2["model"]) == doc["systems"]["ihl@1"]["checkpoint"]
    for k, person in enumerate(people, 1):
        asked = [json.loads(line) for line in (work / f"request{k}.jsonl").read_text().splitlines()]
        assert {r["person"] for r in asked} == {person} and len(asked) == 10
        targets = json.loads((work / f"request{k}.targets.json").read_text())["targets"]
        assert [t["name"] for t in targets] == [person] and len(targets[0]["facts"]) == 10
    # after each request, that request's answers lose probability; the target is its own reference here
    p = {n: [r["answer_probability"] for r in s["sequential"]["requests"]] for n, s in doc["systems"].items()}
    assert p["ihl@1"][0] < p["target"][0] and p["ihl@2"][1] < p["ihl@1"][1]
    assert [r["request"] for r in doc["systems"]["ihl@2"]["sequential"]["requests"]] == people
    assert doc["systems"]["target"]["summary"]["forget_quality"] == pytest.approx(1.0)   # target == retain model
    assert doc["systems"]["ihl@2"]["summary"]["model_utility"] is not None
    assert doc["systems"]["ihl@2"]["sequential"]["forget_quality_so_far"] is not None
    assert doc["systems"]["ihl@1"]["training"]["train_seconds"] > 0
    md = (work / "report.md").read_text()
    assert "Sequential requests" in md and f"request 2: {people[1]}" in md and "ihl@2" in md
    assert (work / "plots" / "sequential_requests.png").stat().st_size > 0

    # a re-run trains nothing again
    import unlearnkit.training.run as T

    def refuse(*a, **k):
        raise AssertionError("should have been cached")

    monkeypatch.setattr(T, "run_training", refuse)
    again = run_sequential(load_compare_config(str(tmp_path / "cmp.yaml")), log=quiet, report=False)
    assert again["systems"]["ihl@2"]["sequential"] == doc["systems"]["ihl@2"]["sequential"]


def test_explicit_request_specs_keep_their_order(tmp_path, tiny_dir):
    from unlearnkit.compare.sequential import request_configs, request_sets

    one = "synth/forget?people=4&forget=1"
    cfg = load_compare_config(write_configs(tmp_path, tiny_dir, method="ihl", requests=[FORGET, one]))
    sets = request_sets(cfg)
    assert [label for label, _ in sets] == [FORGET, one] and [len(s) for _, s in sets] == [20, 10]
    paths = request_configs(cfg, sets, tmp_path / "w")
    assert yaml.safe_load(Path(paths[1]).read_text())["data"]["forget"] == one


@pytest.mark.parametrize("section, message", [
    ({"method": "ihl", "requets": [FORGET]}, "requets"),
    ({"method": "npo", "split": FORGET}, "not a key of `methods`"),
    ({"method": "ihl"}, "exactly one of"),
    ({"split": FORGET}, "name the method"),
    ({"method": "ihl", "split": FORGET, "requests": [FORGET]}, "exactly one of"),
])
def test_bad_sequential_sections_are_refused(tmp_path, tiny_dir, section, message):
    with pytest.raises(ConfigError, match=message):
        load_compare_config(write_configs(tmp_path, tiny_dir, **section))


def test_a_split_about_one_person_is_refused(tmp_path, tiny_dir):
    from unlearnkit.compare.sequential import request_sets

    cfg = load_compare_config(write_configs(tmp_path, tiny_dir, method="ihl", split="synth/forget?people=4&forget=1"))
    with pytest.raises(ConfigError, match="two or more people"):
        request_sets(cfg)


def test_sequential_needs_its_section(tmp_path, tiny_dir):
    from unlearnkit.compare.sequential import run_sequential

    cfg = load_compare_config(write_configs(tmp_path, tiny_dir))
    cfg.sequential.method = ""
    with pytest.raises(ConfigError, match="no `sequential:` section"):
        run_sequential(cfg, log=quiet)


def test_the_guard_is_rebuilt_over_the_requests_so_far_and_measured_after_each(tmp_path, tiny_dir, monkeypatch):
    """`sequential.guard`: after request k, the target behind a policy built over requests 1..k (what a
    served policy rebuilt in place enforces). The guarded measurement itself runs in vLLM; here the engine's
    metrics are taken unguarded (recorded with the policy they were asked for) so the test stays on the CPU."""
    import unlearnkit.compare.measure as M
    from unlearnkit.compare.sequential import run_sequential
    from unlearnkit.data.sources import load_spec
    from unlearnkit.guard.policy import read_meta

    real, asked = M.engine_metrics, []

    def engine_metrics(ecfg, path, policy, log=print):
        asked.append((path, policy))
        return real(ecfg, path, None, log=log)

    monkeypatch.setattr(M, "engine_metrics", engine_metrics)
    cfg_path = write_configs(tmp_path, tiny_dir, method="ihl", split=FORGET, guard=True)
    doc = yaml.safe_load(Path(cfg_path).read_text())
    doc["guard"] = {"forget": FORGET, "retain": RETAIN, "set": ["fpr=0.1"]}
    Path(cfg_path).write_text(yaml.safe_dump(doc))
    out = run_sequential(load_compare_config(cfg_path), log=quiet)
    assert list(out["systems"]) == ["target", "ihl@1", "target+guard@1", "ihl@2", "target+guard@2"]
    people = list(dict.fromkeys(r.extra["person"] for r in load_spec(FORGET)))
    policies = [p for _, p in asked if p]
    assert len(policies) == 2 and all(path == str(tiny_dir) for path, p in asked if p)   # the target, guarded
    named = [{t["name"] for t in read_meta(p)["targets"]} for p in policies]
    assert people[0] in named[0] and people[1] not in named[0]           # request 1's people only
    assert {people[0], people[1]} <= named[1]                             # then requests 1..2
    g2 = out["systems"]["target+guard@2"]
    assert g2["kind"] == "guard" and g2["guard"]["policy"] == policies[1] and g2["training"]["train_seconds"] > 0
    assert g2["sequential"]["after_request"] == 2
    md = (tmp_path / "out" / "sequential" / "report.md").read_text()
    assert "target+guard@2" in md and "a guard built over requests 1..k" in md


def test_a_sequential_guard_needs_a_guard_section(tmp_path, tiny_dir):
    from unlearnkit.compare.sequential import run_sequential

    cfg = load_compare_config(write_configs(tmp_path, tiny_dir, method="ihl", split=FORGET, guard=True))
    with pytest.raises(ConfigError, match="no `guard:` section"):
        run_sequential(cfg, log=quiet)
