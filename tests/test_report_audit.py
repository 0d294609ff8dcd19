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


def test_one_verdict_per_system_with_its_utility_cost():
    from unlearnkit.compare.report_audit import verdict_markdown, verdicts

    def system(kind, leak, utility, fq=None):
        return {"status": "ok", "kind": kind, "attacks": {"by_category": {"forget": {"all": {"leak_rate": leak}}}},
                "summary": {"model_utility": utility, "forget_quality": fq}}

    doc = {"systems": {"target": system("reference", 0.8, 0.50), "retain": system("reference", 0.1, 0.49),
                       "npo": system("weight", 0.1, 0.45, fq=0.3), "grad_diff": system("weight", 0.12, 0.40, fq=1e-4),
                       "target+guard": system("guard", 0.05, 0.48), "undial": system("weight", 0.6, 0.5, fq=1e-5)}}
    lines = dict(line.split(": ", 1) for line in verdicts(doc))
    assert lines["**npo**"].startswith("forgets") and "-0.050 vs target" in lines["**npo**"]
    assert lines["**grad_diff**"].startswith("suppresses") and lines["**target+guard**"].startswith("suppresses")
    assert lines["**undial**"].startswith("does not forget") and len(lines) == 4
    assert verdict_markdown(doc)[0] == "## Verdict"
    assert verdicts({"systems": {"npo": doc["systems"]["npo"]}}) == []
