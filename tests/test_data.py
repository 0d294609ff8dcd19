"""Data sources, the synthetic generator, and chat formatting with answer-only labels."""

import json
import os
from pathlib import Path

import pytest

from unlearnkit.data.formatting import encode_all, encode_qa, prompt_text
from unlearnkit.data.records import QA
from unlearnkit.data.sources import DataError, load_spec
from unlearnkit.data.synth import QA_PER_PERSON, synth_qa

TOFU = Path(os.environ["UNLEARN_TOFU_DIR"])
needs_tofu = pytest.mark.skipif(not (TOFU / "forget01.json").is_file(), reason="TOFU copy not found")


def test_synth_is_deterministic_by_seed():
    a, b, c = synth_qa(5, seed=1), synth_qa(5, seed=1), synth_qa(5, seed=2)
    assert [r.to_json() for r in a] == [r.to_json() for r in b]
    assert [r.answer for r in a] != [r.answer for r in c]
    assert len(a) == 5 * QA_PER_PERSON


def test_synth_splits_partition_people_like_tofu():
    forget, retain, full = load_spec("synth/forget"), load_spec("synth/retain"), load_spec("synth/full")
    assert [r.question for r in retain + forget] == [r.question for r in full]
    assert {r.extra["person"] for r in forget}.isdisjoint({r.extra["person"] for r in retain})
    assert len({r.extra["person"] for r in forget}) == 2
    # TOFU's extra fields for truth-ratio metrics, with the perturbed answers really different
    r = forget[0]
    assert r.extra["paraphrased_question"] != r.question
    assert len(r.extra["perturbed_answer"]) == 3 and r.extra["paraphrased_answer"] not in r.extra["perturbed_answer"]


def test_synth_spec_parameters_and_errors():
    assert len(load_spec("synth/forget?people=6&forget=3&seed=4")) == 3 * QA_PER_PERSON
    with pytest.raises(DataError, match="unknown parameter"):
        load_spec("synth/forget?persons=3")
    with pytest.raises(DataError, match="valid"):
        load_spec("synth/everything")


@needs_tofu
def test_tofu_local_splits_and_difference():
    f10, f01 = load_spec("tofu/forget10"), load_spec("tofu/forget01")
    assert len(f10) == 400 and len(f01) == 40
    rest = load_spec("tofu/forget10-forget01")
    assert len(rest) == 360 and [r.question for r in rest] == [r.question for r in f10[:360]]
    pert = load_spec("tofu/forget01_perturbed")
    assert len(pert[0].extra["perturbed_answer"]) == 5


@needs_tofu
def test_tofu_missing_split_lists_available():
    with pytest.raises(DataError, match="forget77.*available splits"):
        load_spec("tofu/forget77")


def test_tofu_hub_failure_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("UNLEARN_TOFU_DIR", "locuslab/TOFU")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match="could not get TOFU split.*UNLEARN_TOFU_DIR"):
        load_spec("tofu/forget01")


def test_user_files(tmp_path):
    good = tmp_path / "qa.jsonl"
    good.write_text(json.dumps({"question": "Q?", "answer": "A."}) + "\n\n" + json.dumps({"question": "R?", "answer": "B"}))
    assert [r.answer for r in load_spec(f"file:{good}")] == ["A.", "B"]
    as_list = tmp_path / "qa.json"
    as_list.write_text(json.dumps([{"question": "Q?", "answer": "A."}]))
    assert load_spec(str(as_list))[0].question == "Q?"
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "Q?", "answer": "A."}) + "\n{oops\n")
    with pytest.raises(DataError, match=r"bad.jsonl:2: not valid JSON"):
        load_spec(f"file:{bad}")
    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text(json.dumps({"prompt": "Q?"}))
    with pytest.raises(DataError, match="'question' and 'answer'"):
        load_spec(f"file:{wrong}")
    with pytest.raises(DataError, match="does not exist"):
        load_spec("file:/no/such/file.jsonl")
    text = tmp_path / "book.txt"
    text.write_text("First paragraph.\n\nSecond one.\n")
    assert [(r.question, r.answer) for r in load_spec(f"text:{text}")] == [(None, "First paragraph."), (None, "Second one.")]
    with pytest.raises(DataError, match="unknown data spec"):
        load_spec("ftp://x")


def test_labels_cover_exactly_the_answer(tiny):
    _, tok = tiny
    rec = QA("Where was Kalo Mirten born?", "Kalo Mirten was born in Porto, Portugal.")
    enc = encode_qa(tok, rec, 256)
    n_prompt = len(tok(prompt_text(tok, rec.question), add_special_tokens=False)["input_ids"])
    assert enc["labels"][:n_prompt] == [-100] * n_prompt
    answer_ids = [t for t in enc["labels"] if t != -100]
    assert tok.decode(answer_ids) == rec.answer + tok.eos_token
    assert enc["input_ids"][n_prompt:] == answer_ids


def test_raw_text_is_all_answer(tiny):
    _, tok = tiny
    enc = encode_qa(tok, QA(None, "Kalo Mirten writes gothic mystery."), 256)
    assert enc["labels"] == enc["input_ids"]


def test_empty_and_truncated_sets_are_refused(tiny):
    _, tok = tiny
    with pytest.raises(DataError, match="forget set is empty"):
        encode_all(tok, [], 64, "forget")
    with pytest.raises(DataError, match="no answer tokens left after truncation"):
        encode_all(tok, load_spec("synth/forget"), 8, "forget")


def test_the_extra_fields_read_typed_and_write_back_unchanged():
    raw = {"question": "Who?", "answer": "Kalo.", "paraphrased_question": "Which person?", "paraphrased_answer": 3,
           "perturbed_answer": ["Ines.", 7, "Zed."], "person": "Kalo Mirten", "source_id": 12}
    r = QA.from_json(raw, "test")
    assert (r.paraphrased_question, r.paraphrased_answer, r.person) == ("Which person?", None, "Kalo Mirten")
    assert r.perturbed_answers == ["Ines.", "Zed."]           # what is not text reads as absent
    assert r.to_json() == raw                                  # every field kept as the source had it
    bare = QA("Q?", "A.")
    assert (bare.paraphrased_question, bare.perturbed_answers, bare.person) == (None, [], None)
