"""Files: written so that a reader never sees half of one, and checksummed; and the one JSON codec of
result dataclasses.

The codec: `to_json(obj)` and `from_json(cls, value)` over a dataclass's fields (Optional, nested
dataclasses, lists, tuples, dicts), so a result type declares its fields and nothing else (`JsonRecord`
gives it `to_json()` / `from_json()`). Reading is lenient, as results written by older versions need: a
missing field takes its default (a required one: None), and a part that is not of the expected shape (null
where an object is expected, a list that is not one) reads as empty; values are kept as the JSON holds them
(an int stays an int). A record read from JSON remembers the keys it had, in their order, and is written
back with exactly those, so a file read and written again is byte-for-byte the same; a record built in
code writes its fields in declaration order.

Field metadata (`field(metadata=...)`; `flat()` and `optional()` spell the common ones):
    flatten     a nested dataclass written inline, its keys among its parent's
    omit_none   left out of the JSON while None (a field only some writers have)
    key         the JSON key, where it is not the field's name
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import types
import typing
from pathlib import Path
from typing import Any, Union


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


# ----------------------------------------------------------------------------- the JSON codec
_KEYS = "_json_keys"   # on a record read from JSON: the keys it had, in order


def flat(**kw) -> Any:
    """A nested dataclass field written inline (its keys among the parent's)."""
    return dataclasses.field(metadata={"flatten": True}, **kw)


def optional(default: Any = None, key: str | None = None) -> Any:
    """A field left out of the JSON while None."""
    return dataclasses.field(default=default, metadata={"omit_none": True, **({"key": key} if key else {})})


def _key(f: dataclasses.Field) -> str:
    return f.metadata.get("key", f.name)


def to_json(value: Any) -> Any:
    """`value` as JSON data: a dataclass as an object of its fields (see the module docstring), lists and
    tuples as lists, dicts by value, anything else as it is."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict = {}
        for f in dataclasses.fields(value):
            v = getattr(value, f.name)
            if f.metadata.get("flatten"):
                out.update(to_json(v))
            elif not (v is None and f.metadata.get("omit_none")):
                out[_key(f)] = to_json(v)
        keys = getattr(value, _KEYS, None)
        return out if keys is None else {k: out[k] for k in keys if k in out}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    return value


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict:
    return typing.get_type_hints(cls)


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType)


def from_json(tp: Any, value: Any) -> Any:
    """`value` (JSON data) read as type `tp`."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if _is_union(tp):
        if value is None:
            return None
        inner = [a for a in args if a is not type(None)]
        return from_json(inner[0], value) if len(inner) == 1 else value
    if dataclasses.is_dataclass(tp):
        return _record(tp, value)
    if origin in (list, tuple) or tp in (list, tuple):
        items = [from_json(args[0], v) if args else v for v in value] if isinstance(value, list) else []
        return tuple(items) if (origin or tp) is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            return {}
        return {k: from_json(args[1], v) for k, v in value.items()} if args else dict(value)
    return value


def _record(cls: type, value: Any) -> Any:
    d = value if isinstance(value, dict) else {}
    hints, kwargs = _hints(cls), {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.metadata.get("flatten"):
            kwargs[f.name] = from_json(hints[f.name], d)
        elif _key(f) in d:
            kwargs[f.name] = from_json(hints[f.name], d[_key(f)])
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            kwargs[f.name] = None
    obj = cls(**kwargs)
    object.__setattr__(obj, _KEYS, tuple(d))
    return obj


class JsonRecord:
    """A dataclass written and read by this codec: `obj.to_json()`, `Cls.from_json(value)`."""

    def to_json(self) -> Any:
        return to_json(self)

    @classmethod
    def from_json(cls, value: Any):
        return from_json(cls, value)
