"""One attack-result schema from measuring to report (compare/attack_results.py) over one codec (files.py): the JSON
compare writes is what it wrote before the types were one set, and results.json files read back and written
again are byte-for-byte the same.

tests/data/attacks/written.json: systems/<name>.json and results.json of three systems (an engine system with
every weights attack, an agent system with skipped ones, a system without probes) as compare wrote them
before the writing and reading types were merged."""

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pytest

from unlearnkit.files import JsonRecord, flat, optional
from unlearnkit.compare import attack_results as AR
from unlearnkit.compare import results as RS
from unlearnkit.compare.run import _compact, _system_json
from unlearnkit.evaluation.leakage import ProbeScores, ReplyScore, ScoredProbe

DATA = Path(__file__).resolve().parent / "data"
FIXTURES = sorted((DATA / "report").glob("*.results.json"))
# results.json part -> the type the report reads it as
COMPACT = {"attacks": AR.PromptAttacks, "relearn": AR.FinetuneSummary, "benign_relearn": AR.FinetuneSummary,
           "quantize": AR.QuantizeSummary, "sequential": RS.Sequential}


def _probes(tag: str, n: int) -> ProbeScores:
    return ProbeScores.of([ScoredProbe(role, cat, "v", i, f"{tag} q{i}", f"{tag} reply {i}",
                                       ReplyScore(0.5 / (i + 1), None if i % 2 else 0.25 * i, i == 1, i == 2))
                           for i in range(n) for role, cat in (("forget", "plain"), ("forget", "jb"), ("neighbour", "plain"))])


def _measured() -> list[dict]:
    serving = AR.Serving.from_json({"requests": 6, "output_tokens": 40, "batch_seconds": 1.5, "tokens_per_s": 26.67,
                                    "latency_median_s": 0.2, "latency_requests": 2})
    agent_serving = AR.Serving.from_json({**serving.to_json(), "server_start_s": 12.0,
                                          "routes": {"passthrough": 3, "rewrite": 3}, "llm_calls_per_flagged": 2.5})
    rows = {"unquantized": AR.QuantRowResult(_probes("d", 2), 0.02, {}, 1.0),
            "int4-channel": AR.QuantRowResult(_probes("e", 2), None, {"layers": 3, "rel_error": 0.1}, 2.5)}
    engine = {"status": "ok", "system": "x", "kind": "weight", "base": "x", "checkpoint": "/c",
              "training": {"train_seconds": 3.0}, "metrics": None,
              "attacks": AR.PromptAttacks(_probes("a", 3), serving),
              "relearn": AR.FinetuneResult(8, 4, 3.2, _probes("b", 2), _probes("c", 2)),
              "benign_relearn": AR.Skipped("no retain items"), "quantize": AR.QuantizeResult(4, False, rows),
              "seconds": 9.0}
    agent = {**engine, "system": "y", "attacks": AR.PromptAttacks(_probes("f", 1), agent_serving),
             "relearn": AR.Skipped("served"), "quantize": AR.Skipped("agents"),
             "benign_relearn": AR.FinetuneResult(2, 1, 0.5, _probes("g", 1), _probes("h", 1))}
    empty = {**engine, "system": "z", "attacks": AR.PromptAttacks(ProbeScores.of([]), AR.Serving.from_json({}))}
    return [engine, agent, empty]


def test_compare_writes_the_json_it_wrote_before():
    want = json.loads((DATA / "attacks" / "written.json").read_text())
    for res in _measured():
        full = _system_json(res)
        assert json.dumps(full, indent=1) == json.dumps(want[res["system"]]["full"], indent=1)
        assert json.dumps(_compact(full), indent=1) == json.dumps(want[res["system"]]["compact"], indent=1)


def test_systems_json_reads_back_to_the_same_attack_results():
    for res in _measured():
        full = _system_json(res)
        for name in AR.ATTACK_RESULTS:
            back = AR.attack_from_json(name, full[name])
            assert back == res[name] and back.to_json() == full[name]


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.name)
def test_results_json_round_trips_byte_identical(path):
    """Every attack part (and sequential-requests part) of every system read as the report's type and written
    again: the file's bytes."""
    text = path.read_text()
    doc = json.loads(text)
    for name, res in doc["systems"].items():
        typed = RS.SystemResult.from_json(name, res)
        for part, kind in COMPACT.items():
            if part in res:
                res[part] = kind.from_json(res[part]).to_json()
                assert res[part] == getattr(typed, part).to_json()
    assert json.dumps(doc, indent=1) + "\n" == text


@dataclass(frozen=True)
class _Leaf(JsonRecord):
    a: Optional[int] = None
    b: str = field(default="", metadata={"key": "bee"})


@dataclass(frozen=True)
class _Node(JsonRecord):
    leaf: _Leaf = flat(default_factory=_Leaf)
    kids: list[_Leaf] = field(default_factory=list)
    pair: tuple[int, ...] = ()
    by: dict[str, _Leaf] = field(default_factory=dict)
    maybe: Optional[_Leaf] = None
    note: Optional[str] = optional()


def test_the_codec_over_fields():
    node = _Node(_Leaf(1, "x"), [_Leaf(2)], (3, 4), {"k": _Leaf(b="y")}, None)
    assert node.to_json() == {"a": 1, "bee": "x", "kids": [{"a": 2, "bee": ""}], "pair": [3, 4],
                              "by": {"k": {"a": None, "bee": "y"}}, "maybe": None}
    assert _Node.from_json(node.to_json()) == node
    # lenient: parts of the wrong shape read as empty, missing fields as their defaults, and are written back lacking
    odd = {"kids": None, "by": [1], "maybe": {"a": 5}, "extra": 1}
    got = _Node.from_json(odd)
    assert got == _Node(kids=[], by={}, maybe=_Leaf(5)) and got.to_json() == {"kids": [], "by": {}, "maybe": {"a": 5}}
    assert _Node.from_json(None) == _Node() and _Node.from_json(None).to_json() == {}
    # a record read from JSON keeps the JSON's key order
    assert list(_Leaf.from_json({"bee": "z", "a": 1}).to_json()) == ["bee", "a"]
