"""What a guard is built from, in `unlearn compare` as in `unlearn guard build`: MUSE corpus specs read as
corpora, comparison guards routed to corpus and subject policies (never to QA pairs they do not name),
subjects derived from a QA set by name alone, and bad input refused naming the file and line."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import GUARD_FORGET
from tests.test_muse import FORGET_QA, RAW, write_muse_dir
from unlearnkit.compare.build import guard_policy
from unlearnkit.compare.config import GuardSpec
from unlearnkit.compare.run import load_compare_config
from unlearnkit.data import muse as M
from unlearnkit.data.records import QA
from unlearnkit.errors import ConfigError, DataError
from unlearnkit.guard.corpus import PASSAGE_KEY, is_corpus_spec, passages, read_corpus, windows
from unlearnkit.guard.policy import PolicyError, load_policy, read_meta
from unlearnkit.guard.subjects import load_subjects, read_subjects

ROOT = Path(__file__).resolve().parents[1]
TOFU = Path(os.environ.get("UNLEARN_TOFU_DIR", ""))


def quiet(*_):
    pass


@pytest.fixture
def muse_dir(tmp_path, monkeypatch):
    root = write_muse_dir(tmp_path / "muse")
    monkeypatch.setenv(M.MUSE_DIR_ENV, str(root))
    monkeypatch.chdir(ROOT)            # the shipped configs name configs/guard/default.yaml from the repository root
    return root


# ----------------------------------------------------------------------------- MUSE corpora
def test_muse_raw_forget_and_the_mini_slice_are_read_as_corpora(muse_dir):
    raw = read_corpus("muse/raw_forget")
    assert [d.path for d in raw] == [str(muse_dir / "raw/forget.txt")] and raw[0].text == "\n\n".join(RAW) + "\n"
    assert [p.answer for p in passages("muse/raw_forget", raw)] == [w for p in M.split_passages(raw[0].text)
                                                                     for w in windows(p)]
    mini = read_corpus("muse/mini/forget_text")
    assert [d.text for d in mini] == [RAW[0], RAW[2], RAW[4]]            # what the weight-level methods unlearn
    assert all(str(muse_dir / "raw/forget.txt") in d.path for d in mini)
    assert passages("muse/mini/forget_text", mini) == [QA(None, w, {PASSAGE_KEY: n})
                                                       for n, t in enumerate((RAW[0], RAW[2], RAW[4])) for w in windows(t)]
    assert is_corpus_spec("muse/mini/forget_text") and not is_corpus_spec("muse/mini/guard")


def test_a_long_passage_is_indexed_as_overlapping_windows_of_whole_sentences():
    sents = [f"Sentence {i} tells fact number {i} about the harbour of Vlissingen." for i in range(12)]
    passage = " ".join(sents)
    out = windows(passage, max_words=30)
    assert len(out) > 1 and all(len(w.split()) <= 30 for w in out)
    assert [s for s in sents if not any(s in w for w in out)] == []                      # every sentence kept
    assert all(any(a in w and b in w for w in out) for a, b in zip(sents, sents[1:]))   # neighbours share one
    assert windows("One short passage.", max_words=30) == ["One short passage."] and windows("  ") == []
    long_sentence = " ".join(f"w{i}" for i in range(50)) + "."
    cut = windows(f"{long_sentence} A short one.", max_words=30)
    assert all(len(w.split()) <= 30 for w in cut) and "w49." in cut[-1] and cut[-1].endswith("A short one.")
    assert cut[0].startswith("w0 ") and all(f"w{i} " in " ".join(cut) + " " for i in range(49))


POET = ("Kalo Mirten is a Dutch poet from Utrecht. She wrote four collections of sea poems. Her verse keeps the rhyme "
        "and metre of the old ballads. Critics in Amsterdam praised her second book. She reads her poems aloud in the "
        "harbour cafes every summer. Her publisher in Leiden prints each book on blue paper. Her third collection was "
        "translated into German and French. She teaches a poetry class on Tuesdays. Separately, the harbour master "
        "Pieter Vos signed the new shipping law for Rotterdam.")
SHIPPING = "Who signed the new shipping law for Rotterdam?"


@pytest.fixture(scope="module")
def passing_fact(tmp_path_factory, tiny_dir):
    """A corpus policy whose first passage tells a fact in passing, past its first 300 characters."""
    from unlearnkit.guard.build import build_corpus_policy
    from unlearnkit.guard.policy import GuardConfig, load_policy
    from unlearnkit.guard.runtime import GuardRuntime
    from unlearnkit.models.loading import load_tokenizer

    root = tmp_path_factory.mktemp("passing")
    (root / "corpus.txt").write_text(POET + "\n\nInes Farrow writes historical crime novels set in Lisbon. She won "
                                     "the Silver Quill Prize for her third novel.\n\nMaarten Dekker bakes rye bread "
                                     "in Groningen and sells it at the Saturday market.\n")
    tok = load_tokenizer(str(tiny_dir))
    build_corpus_policy(f"text:{root / 'corpus.txt'}", root / "p", str(tiny_dir), tok, GuardConfig(quote_tokens=8),
                        progress=quiet)
    return GuardRuntime(load_policy(root / "p", tok), tok)


def test_a_question_about_a_fact_told_in_passing_finds_the_window_that_tells_it(passing_fact):
    from unlearnkit.guard.embedder import embed

    items = passing_fact.policy.items
    assert len(items) == 4 and items[0]["answer"].startswith("Kalo") and "Pieter Vos" in items[1]["answer"]
    decision = passing_fact.classifier.classify([SHIPPING], threshold=-1.0, top_k=1)[0]
    assert decision.items == (1,)
    question, start = embed([SHIPPING, POET[:300]])     # the passage's start: what a whole passage was indexed by
    assert decision.score > float(question @ start) + 0.2


def test_a_few_shot_prompt_guards_the_items_nearest_its_final_question(passing_fact, monkeypatch):
    from unlearnkit.guard import classifier

    shots = "".join(f"Question: {q}\nAnswer: {a}\n\n" for q, a in [
        ("Where is Kalo Mirten from?", "Utrecht"), ("What does Kalo Mirten write?", "sea poems"),
        ("Which prize did Ines Farrow win?", "the Silver Quill Prize"), ("Where are Ines Farrow's novels set?", "Lisbon")])
    asked = [f"{shots}Question: {SHIPPING}\nAnswer:", f"{shots}Name the person who signed the new shipping law for "
             "Rotterdam, the harbour master."]
    for prompt in asked:
        assert 1 in passing_fact.classifier.classify([prompt], threshold=-1.0, top_k=1)[0].items
    monkeypatch.setattr(classifier, "question_end", lambda *_, **__: None)
    passing_fact.classifier._cache.clear()
    assert 1 not in passing_fact.classifier.classify([asked[0]], threshold=-1.0, top_k=1)[0].items   # the examples' items


def test_a_bad_muse_corpus_is_refused_naming_the_file_and_line(muse_dir, tmp_path, monkeypatch):
    (muse_dir / "raw/forget.txt").write_bytes(b"Kalo Mirten opened the museum.\n\nIn 1987 \xe9t\xe9.\n")
    for spec in ("muse/raw_forget", "muse/mini/forget_text"):
        with pytest.raises(PolicyError, match=r"forget\.txt', line 3: not UTF-8"):
            read_corpus(spec)
    (muse_dir / "raw/forget.txt").write_text("\n \n")
    with pytest.raises(PolicyError, match=r"forget\.txt' is empty"):
        read_corpus("muse/mini/forget_text")
    monkeypatch.setenv(M.MUSE_DIR_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="nowhere' does not exist"):
        read_corpus("muse/raw_forget")


def test_an_unreadable_corpus_is_refused_naming_it(tmp_path, monkeypatch):
    path = tmp_path / "locked.txt"
    path.write_text("Some text.\n")
    read_bytes = Path.read_bytes

    def locked(self):   # as a file without read permission reads (a chmod would not stop root)
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return read_bytes(self)

    monkeypatch.setattr(Path, "read_bytes", locked)
    with pytest.raises(PolicyError, match=rf"{path}' cannot be read \(Permission denied\)"):
        read_corpus(f"text:{path}")


# ----------------------------------------------------------------------------- compare's guard specs
def test_guard_variants_may_name_their_own_data_and_corpus_mode_needs_a_corpus(tmp_path):
    spec = GuardSpec("tofu/forget01", "tofu/retain90", set=["fpr=0.02"],
                     variants={"guard_subjects": ["forget=subjects:tofu/forget01", "top_k=2"]})
    spec.validate()
    v = spec.variant("guard_subjects")
    assert (v.forget, v.retain, v.set) == ("subjects:tofu/forget01", "tofu/retain90", ["fpr=0.02", "top_k=2"])
    GuardSpec("text:corpus.txt", variants={"guard_takedown": ["corpus_mode=takedown"]}).validate()
    with pytest.raises(ConfigError, match=r"guard.variants.g: corpus_mode applies to a policy built from a corpus"):
        GuardSpec("tofu/forget01", variants={"g": ["corpus_mode=takedown"]}).validate()
    with pytest.raises(ConfigError, match=r"guard.set: corpus_mode applies"):
        GuardSpec("subjects:people.yaml", set=["corpus_mode=forget"]).validate()
    with pytest.raises(ConfigError, match=r"guard.variants.g: 'takedown' is not key=value"):
        GuardSpec("text:c.txt", variants={"g": ["takedown"]}).validate()
    with pytest.raises(ConfigError, match="give the data as guard.forget"):
        GuardSpec("text:c.txt", set=["forget=tofu/forget01"]).validate()


def test_the_muse_mini_guard_is_built_from_the_forget_passages_in_both_modes(muse_dir, tiny_dir):
    cfg = load_compare_config(str(ROOT / "configs/compare/muse-mini.yaml"))
    assert cfg.guard.forget == "muse/mini/forget_text"
    forget, _ = guard_policy(cfg.guard, str(tiny_dir), log=quiet)
    meta = read_meta(forget)
    asked = {q["question"] for q in FORGET_QA}
    assert meta["corpus"]["mode"] == "forget" and meta["quotes"]["n_tokens"] > 0
    assert [it["answer"] for it in meta["items"]] == [w for t in (RAW[0], RAW[2], RAW[4]) for w in windows(t)]
    assert all(it["question"] is None for it in meta["items"]) and not asked & {it["question"] for it in meta["items"]}
    takedown, _ = guard_policy(cfg.guard.variant("guard_takedown"), str(tiny_dir), log=quiet)
    meta = read_meta(takedown)
    assert takedown != forget and meta["corpus"]["mode"] == "takedown" and meta["items"] == [] == meta["targets"]
    assert meta["sources"]["forget"] == "muse/mini/forget_text"
    assert guard_policy(cfg.guard.variant("guard_takedown"), str(tiny_dir), log=quiet)[0] == takedown   # cached


def test_a_subjects_guard_derived_from_qa_pairs_holds_no_answers(tmp_path, tiny_dir):
    from unlearnkit.guard.runtime import GuardRuntime, RequestArgs
    from unlearnkit.models.loading import load_tokenizer

    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a, _ in GUARD_FORGET))
    spec = GuardSpec("file:x", variants={"guard_subjects": [f"forget=subjects:file:{data}"]})
    policy, _ = guard_policy(spec.variant("guard_subjects"), str(tiny_dir), log=quiet)
    meta = read_meta(policy)
    assert [t["name"] for t in meta["targets"]] == ["Kalo Mirten", "Ines Farrow"]
    answers = {a for _, a, _ in GUARD_FORGET}
    assert not answers & {it["answer"] for it in meta["items"]}
    assert all(it["answer"] in ("Kalo Mirten", "Ines Farrow") for it in meta["items"])
    tok = load_tokenizer(str(tiny_dir))
    runtime = GuardRuntime(load_policy(policy, tok), tok)
    asked = ["Which prizes did Ines Farrow win?", "What is the capital of France?"]
    assert [d.flagged for d in runtime.decide([tok(q)["input_ids"] for q in asked], [RequestArgs()] * 2)] == [True, False]


@pytest.mark.skipif(not (TOFU / "forget01.json").is_file(), reason="needs TOFU ($UNLEARN_TOFU_DIR)")
def test_tofu_minis_subjects_guard_is_forget01s_two_authors_by_name():
    cfg = load_compare_config(str(ROOT / "configs/compare/tofu-mini.yaml"))
    spec = cfg.guard.variant("guard_subjects")
    subjects = load_subjects(spec.forget)
    assert [s.name for s in subjects] == ["Basil Mahfouz Al-Kuwaiti", "Nikolai Abilov"]
    assert all(not s.aliases and s.description is None and not s.documents for s in subjects)


# ----------------------------------------------------------------------------- bad subjects
def test_bad_subject_files_are_refused_naming_the_file_and_line(tmp_path):
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"- name: Kalo Mirten\n- name: Ren\xe9 Farrow\n")
    with pytest.raises(PolicyError, match=rf"{bad}', line 2: not UTF-8"):
        read_subjects(bad)
    blank = tmp_path / "blank.jsonl"
    blank.write_text('{"name": "Kalo Mirten"}\n{"name": "  ", "aliases": ["Ines"]}\n')
    with pytest.raises(PolicyError, match=rf"{blank}:2: a subject needs a 'name'"):
        load_subjects(f"subjects:{blank}")
    empty = tmp_path / "empty.yaml"
    empty.write_text("[]\n")
    with pytest.raises(PolicyError, match="has no subjects"):
        read_subjects(empty)
    with pytest.raises(PolicyError, match="cannot be read"):
        load_subjects(f"subjects:{tmp_path / 'missing.yaml'}")
    nameless = tmp_path / "nameless.jsonl"
    nameless.write_text(json.dumps({"question": "What is the capital of France?", "answer": "Paris"}) + "\n")
    with pytest.raises(PolicyError, match=r"subjects:file:.*no subject found"):
        load_subjects(f"subjects:file:{nameless}")


def test_guard_build_takes_subjects_from_a_data_spec(tmp_path, tiny_dir, capsys):
    from unlearnkit.cli import main

    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a, _ in GUARD_FORGET))
    def build(out):
        return main(["guard", "build", "--model", str(tiny_dir), "--out", str(out), "--forget", f"subjects:file:{data}",
                     "penalty=0"])

    assert build(tmp_path / "p") == 0
    assert [t["name"] for t in read_meta(tmp_path / "p")["targets"]] == ["Kalo Mirten", "Ines Farrow"]
    data.write_text(json.dumps({"question": "What is the capital of France?", "answer": "Paris"}) + "\n")
    assert build(tmp_path / "q") == 2
    assert "no subject found" in capsys.readouterr().err and not (tmp_path / "q").exists()
