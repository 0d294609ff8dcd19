"""The comparison report rendered from checked-in results.json files is byte-identical to the
markdown and HTML the report rendered before it read typed results (compare/results.py).

Fixtures (tests/data/report/*.results.json, captured from the tests that write reports): a compare
run with every table (weights attacks, truth ratios, cost, a NaN forget quality), a compare run with
a failed system, an audit of an endpoint, sequential requests, a real tiny vLLM run, and an older
result that lacks the fields later versions added. The expected *.report.md / *.report.html were
rendered by the dict-reading report, before the change; the HTML's inlined PNGs are left empty
(matplotlib's bytes are not the report's figures). Tables added since (the fine-tuning attacks) were
added to the expected files by re-rendering them; their diff held only the new table."""

import json
from pathlib import Path

import pytest

from unlearnkit.compare import report as R
from unlearnkit.compare import results as RS

DATA = Path(__file__).resolve().parent / "data" / "report"
FIXTURES = sorted(DATA.glob("*.results.json"))


def _stem(path: Path) -> str:
    return path.name.removesuffix(".results.json")


def test_every_fixture_has_its_expected_report():
    assert len(FIXTURES) >= 6
    for path in FIXTURES:
        assert (DATA / f"{_stem(path)}.report.md").is_file() and (DATA / f"{_stem(path)}.report.html").is_file()


@pytest.mark.parametrize("path", FIXTURES, ids=_stem)
def test_report_renders_byte_identical(path):
    doc = json.loads(path.read_text())
    pngs = R.plots(doc)
    assert R.markdown(doc, [f"plots/{n}" for n in pngs]) == (DATA / f"{_stem(path)}.report.md").read_text()
    assert R.html_page(doc, {n: b"" for n in pngs}) == (DATA / f"{_stem(path)}.report.html").read_text()


def test_results_json_on_disk_is_unchanged_by_reading_it():
    """Typed results are read from the dicts, never written back: the doc is left as it came."""
    for path in FIXTURES:
        doc = json.loads(path.read_text())
        before = json.dumps(doc, sort_keys=True)
        R.tables(doc)
        RS.parse_doc(doc)
        assert json.dumps(doc, sort_keys=True) == before


def test_an_older_result_reads_with_its_missing_fields_empty():
    res = RS.SystemResult.from_json("old", {"status": "ok", "kind": "weight"})
    assert res.ok and res.kind == "weight" and res.base is None
    assert res.metrics.forget_quality is None and res.metrics.truth_ratio is None
    assert res.attacks.forget == {} and res.attacks.serving.tokens_per_s is None
    assert res.relearn.after_leak_rate is None and res.quantize.rows == {} and res.sequential is None
    assert res.unlearning_seconds is None
    # a skipped weights attack reads as not run
    skipped = RS.SystemResult.from_json("s", {"status": "ok", "relearn": {"skipped": "served"}})
    assert skipped.relearn.skipped == "served" and skipped.relearn.after_leak_rate is None
    # a doc without provenance (an older or hand-made one) still has its reproduce rows
    doc = RS.ReportDoc.from_json({"name": "old", "systems": {"s": {"status": "ok"}}})
    assert doc.provenance.config == {} and R.provenance_rows(doc.provenance) == [
        ["started", ""], ["wall seconds", ""], ["probes", "None"]]


def test_the_typed_result_reads_what_the_json_holds():
    doc = json.loads((DATA / "compare_unit.results.json").read_text())
    sysres = RS.parse_doc(doc)
    ihl = sysres["ihl_fila"]
    raw = doc["systems"]["ihl_fila"]
    assert ihl.attacks.forget["paraphrase"].leak_rate == raw["attacks"]["by_category"]["forget"]["paraphrase"]["leak_rate"]
    assert ihl.attacks.neighbour_all.rouge == raw["attacks"]["by_category"]["neighbour"]["all"]["rouge"]
    assert ihl.benign_relearn.after_leak_rate == 0.5 and ihl.training.peak_memory_mb == 1234.0
    assert ihl.quantize.rows["int4-channel"].answer_probability == 0.08
    assert sysres["broken"].ok is False and sysres["broken"].reason == "ValueError: bad <config>"
    # the retain and target fine-tunes are the benchmark's set-up: no unlearning time
    assert sysres["target"].unlearning_seconds is None and ihl.unlearning_seconds == 40.0


def test_a_system_that_is_not_an_object_is_refused_naming_it():
    with pytest.raises(ValueError, match=r"results\.json system 'x': expected an object, got list"):
        RS.SystemResult.from_json("x", [1, 2])


def test_bootstrap_intervals_get_their_table_and_old_results_none():
    doc = json.loads((DATA / "compare_failed.results.json").read_text())
    assert not any(t[0].startswith("Spread from one run") for t in R.tables(doc))   # fixtures predate intervals
    name, res = next((n, r) for n, r in doc["systems"].items() if r.get("summary", {}).get("forget_quality") is not None)
    res["summary"]["forget_quality_interval"] = {"low": 0.01, "high": 0.5, "level": 0.95}
    res["summary"]["model_utility_interval"] = {"low": 0.2, "high": 0.3, "level": 0.95}
    table = next(t for t in R.tables(doc) if t[0].startswith("Spread from one run"))
    assert table[2] == [[name, R._f(res["summary"]["forget_quality"], 4), "0.0100 – 0.5000",
                         R._f(res["summary"].get("model_utility")), "0.200 – 0.300"]]


def test_muse_metrics_get_their_table_where_the_benchmark_has_them():
    doc = json.loads((DATA / "compare_failed.results.json").read_text())
    assert not any(t[0] == "MUSE metrics" for t in R.tables(doc))          # TOFU results: no MUSE table
    ok = next(n for n, r in doc["systems"].items() if r.get("status") == "ok")
    res = doc["systems"][ok]
    res["aggregates"] = {**res.get("aggregates", {}), "verbmem": {"rougeL_f1": 0.25}, "knowmem_forget": {"rougeL_f1": 0.125},
                         "knowmem_retain": {"rougeL_f1": 0.5}}
    res["summary"] = {**res.get("summary", {}), "mia_auc": 0.0, "privleak": -100.0}
    table = next(t for t in R.tables(doc) if t[0] == "MUSE metrics")
    assert table[2] == [[ok, "0.250", "0.125", "0.500", "0.000", "-100.0"]]
