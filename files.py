"""Files: written so that a reader never sees half of one, and checksummed."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path


def write_json_atomic(path: str | Path, data, indent: int | None = 1) -> Path:
    """Write JSON beside `path` and rename it into place: the file is whole or absent."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.partial-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=indent))
    os.replace(tmp, path)
    return path


def json_digest(obj, length: int = 16) -> str:
    """Short hex sha256 of `obj` as sorted-key JSON: the cache keys' hash (same object, same key)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:length]


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
