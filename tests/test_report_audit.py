"""The report's audit sections: leak@k, membership inference per attack, the utility rule."""

from __future__ import annotations

from unlearnkit.compare import report as R
from unlearnkit.compare.report_audit import audit_tables


def _doc() -> dict:
    mia = {"loss": {"auc": 0.1, "privleak": -80.0, "guard_moves": True},
           "reference": {"auc": 0.3, "privleak": -40.0, "guard_moves": True}}
    guarded = {"status": "ok", "leak_at_k": {"probed": 6, "samples": 32, "temperature": 1.0,
                                             "curve": {"1": 0.25, "4": 0.6, "16": 0.9, "32": 1.0}},
               "summary": {"mia_auc": 0.1, "privleak": -80.0, "mia_attacks": mia},
               "aggregates": {"retain": {"truth_ratio": 0.25, "truth_ratio_all_perturbed": 0.41,
                                         "perturbed_dropped": 11}}}
    plain = {"status": "ok", "leak_at_k": {"probed": 6, "samples": 32, "temperature": 1.0,
                                           "curve": {"1": 0.5, "4": 0.9, "16": 1.0, "32": 1.0}}}
    return {"name": "t", "systems": {"target": plain, "target+guard": guarded, "bad": {"status": "failed"}},
            "provenance": {}}


def test_audit_tables_and_leak_plot():
    tables = {t[0]: t for t in audit_tables(_doc())}
    leak = tables["leak@k (sampled answers to the forget questions)"]
    assert leak[1] == ["system", "questions", "leak@1", "leak@4", "leak@16", "leak@32"]
    assert leak[2][1] == ["target+guard", "6", "0.250", "0.600", "0.900", "1.000"]
    mia = tables["Membership inference per attack"]
    assert mia[2] == [["target+guard", "0.100 / -80.0", "0.300 / -40.0"]] and "GradNorm" in mia[3]
    rule = tables["Truth ratio without forget-naming false answers"]
    assert rule[2] == [["target+guard", "retain", "11", "0.250", "0.410"]]
    assert audit_tables({"systems": {}}) == []
    pngs = R.plots(_doc())
    assert pngs["leak_at_k.png"].startswith(b"\x89PNG")
