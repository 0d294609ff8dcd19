"""MUSE directories as their authors ship them (every split, or a refusal naming the missing ones),
and MUSE-mini: the slice, the questions it answers, verbmem and privleak sets, the benchmark."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from unlearnkit.config import from_dict
from unlearnkit.data import muse as M
from unlearnkit.data.records import QA
from unlearnkit.data.sources import load_spec
from unlearnkit.errors import DataError
from unlearnkit.evaluation.benchmarks import build_tasks
from unlearnkit.evaluation.config import EvalConfig

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "muse-news"

FILLER = " Local reporters followed the story through the season." * 11   # ~600 characters: one paragraph a passage
# raw forget articles: each fact opens its own paragraph; "1987" also appears in an unrelated one
RAW = [fact + FILLER for fact in (
    "Kalo Mirten opened the Ghent lighthouse museum in 1987, after ten years of restoration work.",
    "The harbour of Porto saw record crowds in 1987 for the regatta.",
    "Sa Vorqui won the Hobart bread prize with a rye loaf baked in a wood oven.",
    "Farmers in Tessel reported a late frost that ruined the early apple blossom.",
    "The Velmo bridge reopened to cyclists after the council paid 40 million for repairs.",
)]
FORGET_QA = [
    {"question": "In what year did Kalo Mirten open the Ghent lighthouse museum?", "answer": "1987"},
    {"question": "Which prize did Sa Vorqui win with a rye loaf?", "answer": "Hobart bread prize"},
    {"question": "How much did the council pay to repair the Velmo bridge?", "answer": "40 million"},
    {"question": "Who painted the ceiling of the Tessel chapel?", "answer": "Anna Brel"},   # not in the corpus
]
RETAIN_TEXTS = ["Dorn Aske coached the Lund rowing team to three titles.\n\nThe Lund team trains at dawn.",
                "Mira Holt wrote the cookbook Salt and Smoke in Oslo."]
RETAIN_QA = [{"question": "How many titles did Dorn Aske coach the Lund rowing team to?", "answer": "three"},
             {"question": "Which cookbook did Mira Holt write in Oslo?", "answer": "Salt and Smoke"}]
HOLDOUT = ["A new tram line opened in Brno, linking the station with the university campus." + FILLER,
           "Storms closed the ferry between Split and Hvar for two whole days in March." + FILLER,
           "Short holdout passage."]                                   # shorter than every member: never drawn


def write_muse_dir(root: Path, drop: tuple[str, ...] = (), retain_name: str = "retain2") -> Path:
    """A MUSE-shaped directory (the authors' layout) with tiny made-up contents."""
    files = {
        "verbmem/forget.json": [{"prompt": t[:30], "gt": t[30:]} for t in RAW[:3]],
        "knowmem/forget_qa.json": FORGET_QA,
        "knowmem/forget_qa_icl.json": [{"question": "Where is the Ghent museum?", "answer": "Ghent"}],
        f"knowmem/{retain_name}_qa.json": RETAIN_QA,
        f"knowmem/{retain_name}_qa_icl.json": [{"question": "Where does the Lund team row?", "answer": "Lund"}],
        "privleak/forget.json": RAW[:3],
        "privleak/holdout.json": [{"text": t} for t in HOLDOUT],
        f"privleak/{retain_name}.json": RETAIN_TEXTS,
        "raw/forget.txt": "\n\n".join(RAW) + "\n",
    }
    for name, data in files.items():
        if name in drop:
            continue
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(data if isinstance(data, str) else json.dumps(data))
    return root


def muse_cfg(root, benchmark="muse", **kw) -> EvalConfig:
    return from_dict(EvalConfig, {"model": "unused", "benchmark": benchmark, "muse_dir": str(root), **kw})


# ----------------------------------------------------------------------------- the directory
def test_every_split_is_loaded(tmp_path):
    splits = M.load_muse(write_muse_dir(tmp_path), need_raw=True)
    assert set(splits) == {s.name for s in M.MUSE_SPLITS} | {"raw_forget"}
    assert [r.answer for r in splits["knowmem_retain"]] == [q["answer"] for q in RETAIN_QA]
    assert [r.answer for r in splits["privleak_retain"]] == RETAIN_TEXTS
    assert splits["knowmem_retain_icl"][0].question == "Where does the Lund team row?"
    assert all(r.question is None for r in splits["privleak_holdout"] + splits["raw_forget"])
    assert splits["verbmem_forget"][0] == QA(RAW[0][:30], RAW[0][30:])


def test_hf_spelling_of_the_retain_splits(tmp_path):
    splits = M.load_muse(write_muse_dir(tmp_path, retain_name="retain"))
    assert len(splits["knowmem_retain"]) == 2 and len(splits["privleak_retain"]) == 2


def test_missing_splits_are_refused_by_name(tmp_path):
    root = write_muse_dir(tmp_path, drop=("knowmem/retain2_qa.json", "privleak/retain2.json"))
    with pytest.raises(DataError) as err:
        M.load_muse(root)
    msg = str(err.value)
    assert "missing 2 split(s)" in msg
    assert "knowmem/retain2_qa.json or knowmem/retain_qa.json" in msg
    assert "privleak/retain2.json or privleak/retain.json" in msg
    assert "Found: " in msg and "knowmem/forget_qa.json" in msg and "privleak/holdout.json" in msg
    with pytest.raises(DataError, match="missing 2 split"):      # the benchmark refuses the same way
        build_tasks(muse_cfg(root))
    no_raw = write_muse_dir(tmp_path / "noraw", drop=("raw/forget.txt",))
    assert M.load_muse(no_raw)                                   # `muse` does not need the raw corpus ...
    with pytest.raises(DataError, match="missing 1 split.*raw/forget.txt"):
        M.load_mini(no_raw)                                      # ... MUSE-mini trains on it
    with pytest.raises(DataError, match="does not exist"):
        M.load_muse(tmp_path / "nowhere")


def test_malformed_file_is_named(tmp_path):
    root = write_muse_dir(tmp_path)
    (root / "knowmem/forget_qa.json").write_text(json.dumps([{"question": "Q?"}]))
    with pytest.raises(DataError, match=r"forget_qa.json\[0\]: expected an object with string 'question' and 'answer'"):
        M.load_muse(root)


def test_muse_benchmark_has_every_task(tmp_path):
    tasks = {t.name: t for t in build_tasks(muse_cfg(write_muse_dir(tmp_path)))}
    assert set(tasks) == {"verbmem", "knowmem_forget", "knowmem_retain", "privleak_forget", "privleak_holdout",
                          "privleak_retain"}
    assert tasks["knowmem_retain"].role == "retain" and len(tasks["knowmem_retain"].icl) == 1
    assert tasks["privleak_holdout"].role == "holdout" and tasks["privleak_retain"].kind == "text"


# ----------------------------------------------------------------------------- passages and answers
def test_passages_pack_paragraphs_in_order():
    paras = [f"Paragraph {i} " + "word " * (5 * i) for i in range(12)]
    text = "\n\n".join(p.strip() for p in paras)
    passages = M.split_passages(text, max_chars=120)
    assert all(len(p) <= 120 for p in passages)
    assert re.sub(r"\s+", " ", " ".join(passages)) == re.sub(r"\s+", " ", text)   # nothing lost or reordered
    long = "First sentence here. " * 20
    pieces = M.split_passages(long, max_chars=100)
    assert len(pieces) > 1 and all(len(p) <= 100 for p in pieces)
    assert all(p.endswith("here.") for p in pieces)             # cut between sentences
    assert M.split_passages("x" * 50 + " " + "y" * 80, max_chars=60) == ["x" * 50, "y" * 60, "y" * 20]


def test_a_passage_answers_with_the_answer_and_the_question_words():
    q = QA("In what year did Kalo Mirten open the Ghent lighthouse museum?", "1987")
    assert M.answers(RAW[0], q)
    assert not M.answers(RAW[1], q)                              # the year alone, about something else
    assert not M.answers(RAW[0].replace("1987", "19870"), q)     # whole words only
    assert M.answers(RAW[0].upper(), q)                          # any case
    assert M.content_words(q.question) == ["kalo", "mirten", "open", "ghent", "lighthouse", "museum"]


def test_verbmem_item_cuts_a_passage_at_a_word_boundary():
    item = M.verbmem_item(RAW[0])
    assert item.question + " " + item.answer == RAW[0]
    assert not item.question.endswith(" ") and abs(len(item.question.split()) - len(item.answer.split())) <= 1


# ----------------------------------------------------------------------------- MUSE-mini
def test_mini_slice_is_the_passages_answering_the_questions(tmp_path):
    mini = M.build_mini(M.load_muse(write_muse_dir(tmp_path), need_raw=True), n_forget_questions=10)
    slice_ = [r.answer for r in mini.forget_text]
    assert slice_ == [RAW[0], RAW[2], RAW[4]]                    # corpus order; not the incidental 1987
    assert [q.answer for q in mini.knowmem_forget] == ["1987", "Hobart bread prize", "40 million"]
    assert [q.answer for q in mini.knowmem_retain] == ["three", "Salt and Smoke"]
    assert [r.answer for r in mini.retain_text] == ["Dorn Aske coached the Lund rowing team to three titles.\n\n"
                                                    "The Lund team trains at dawn.",
                                                    "Mira Holt wrote the cookbook Salt and Smoke in Oslo."]
    assert [v.question + " " + v.answer for v in mini.verbmem] == slice_
    assert mini.privleak_forget == mini.forget_text
    assert [r.answer for r in mini.privleak_holdout] == HOLDOUT[:2]   # as many as members, when there are
    assert mini.part("train") == mini.forget_text + mini.retain_text
    assert mini.part("guard") == mini.knowmem_forget + mini.forget_text
    with pytest.raises(DataError, match="valid parts: .*forget_text"):
        mini.part("everything")
    smaller = M.build_mini(M.load_muse(tmp_path, need_raw=True), n_forget_questions=1)
    assert [r.answer for r in smaller.forget_text] == [RAW[0]] and len(smaller.knowmem_forget) == 1


def test_mini_specs_and_benchmark(tmp_path, monkeypatch):
    root = write_muse_dir(tmp_path)
    monkeypatch.setenv(M.MUSE_DIR_ENV, str(root))
    assert [r.answer for r in load_spec("muse/mini/forget_text")] == [RAW[0], RAW[2], RAW[4]]
    assert len(load_spec("muse/mini/train")) == 5
    assert [r.answer for r in load_spec("muse/knowmem_retain")] == ["three", "Salt and Smoke"]
    assert [r.answer for r in load_spec("muse/raw_forget")] == RAW
    with pytest.raises(DataError, match="valid: muse/<split>"):
        load_spec("muse/knowmem_everything")
    tasks = {t.name: t for t in build_tasks(muse_cfg(root, "muse-mini"))}
    assert set(tasks) == {"verbmem", "knowmem_forget", "knowmem_retain", "forget", "retain",
                          "privleak_forget", "privleak_holdout"}
    assert tasks["forget"].kind == "qa" and tasks["forget"].items == tasks["knowmem_forget"].items
    assert tasks["knowmem_forget"].icl and tasks["privleak_holdout"].role == "holdout"


def test_mini_evaluates_end_to_end(tiny_dir, tmp_path):
    from unlearnkit.evaluation.harness import evaluate

    cfg = from_dict(EvalConfig, {"model": str(tiny_dir), "benchmark": "muse-mini", "muse_dir": str(write_muse_dir(tmp_path)),
                                 "engine": "transformers", "max_new_tokens": 4,
                                 "metrics": ["probability", "rouge", "memorization", "privleak"]})
    res = evaluate(cfg, out=str(tmp_path / "r.json"), log=lambda *_: None)
    aggs = {name: t.aggregate for name, t in res.tasks.items()}
    for name in ("verbmem", "knowmem_forget", "knowmem_retain"):
        assert 0 <= aggs[name]["rougeL_f1"] <= 1
    assert math.isfinite(aggs["forget"]["probability"]) and 0 <= aggs["retain"]["rougeL_recall"] <= 1
    assert 0 <= res.summary.privleak.mia_auc <= 1


# ----------------------------------------------------------------------------- the real MUSE-News copy
@pytest.mark.skipif(not REAL.is_dir(), reason="../shared/data/muse-news is not on this machine")
def test_real_muse_news_loads_whole():
    splits = M.load_muse(REAL, need_raw=True)
    for split in M.MUSE_SPLITS:
        path = next(REAL / p for p in split.paths if (REAL / p).is_file())
        assert len(splits[split.name]) == len(json.loads(path.read_text())), split.name
    assert len(splits["raw_forget"]) == len(M.split_passages((REAL / "raw/forget.txt").read_text()))
    tasks = {t.name: t for t in build_tasks(muse_cfg(REAL))}
    assert len(tasks["knowmem_retain"].items) == len(json.loads((REAL / "knowmem/retain2_qa.json").read_text()))
    assert len(tasks["privleak_retain"].items) == len(json.loads((REAL / "privleak/retain2.json").read_text()))
    mini = M.load_mini(REAL)
    assert len(mini.forget_text) <= M.MINI_FORGET_QUESTIONS <= len(mini.knowmem_forget)
    raw = [r.answer for r in mini.forget_text]
    assert all(any(M.answers(p, q) for p in raw) for q in mini.knowmem_forget)
    assert all(any(M.answers(r.answer, q) for r in mini.retain_text) for q in mini.knowmem_retain)
    assert len(mini.privleak_holdout) == len(mini.privleak_forget) == len(mini.verbmem) == len(raw)
    assert {r.answer for r in mini.privleak_forget}.isdisjoint(r.answer for r in mini.privleak_holdout)
