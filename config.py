"""YAML configs mapped onto typed dataclasses.

Every config in this project is a (nested) dataclass. `load_config` reads a YAML file,
applies ``dotted.key=value`` overrides from the command line, and builds the dataclass,
rejecting unknown keys and values of the wrong type with a message naming the key.
`dump_config` writes the resolved config back to YAML so every artefact records
exactly what produced it.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .errors import ConfigError  # noqa: F401 - re-exported

T = TypeVar("T")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _union(value: Any, tp: Any, where: str) -> Any:
    args = typing.get_args(tp)
    if value is None and type(None) in args:
        return None
    errors = []
    for arg in args:
        if arg is type(None):
            continue
        try:
            return _coerce(value, arg, where)
        except ConfigError as exc:
            errors.append(str(exc))
    if len(errors) == 1:  # Optional[X]: X's own message (e.g. the unknown key of a section)
        raise ConfigError(errors[0])
    raise ConfigError(f"{where}: {value!r} does not match {_type_name(tp)}")


def _literal(value: Any, tp: Any, where: str) -> Any:
    choices = typing.get_args(tp)
    if value not in choices:
        raise ConfigError(f"{where}: {value!r} is not one of {list(choices)}")
    return value


def _sequence(value: Any, tp: Any, where: str) -> list:
    (item_tp, *_) = typing.get_args(tp) or (Any,)
    if isinstance(value, str):  # allow "a,b,c" from the command line
        value = [v for v in value.split(",") if v]
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{where}: expected a list, got {value!r}")
    return [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]


def _mapping(value: Any, tp: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping, got {value!r}")
    key_tp, val_tp = typing.get_args(tp) or (Any, Any)
    return {_coerce(k, key_tp, where): _coerce(v, val_tp, f"{where}.{k}") for k, v in value.items()}


def _section(value: Any, tp: Any, where: str) -> Any:
    if isinstance(value, tp):
        return value
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
    return from_dict(tp, value, where)


def _bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
        return value.lower() in ("true", "yes", "1")
    raise ConfigError(f"{where}: expected true/false, got {value!r}")


def _number(value: Any, tp: type, where: str) -> Any:
    """An int or a float (from a number or a command-line string; a bool is neither)."""
    what = "an integer" if tp is int else "a number"
    if not isinstance(value, bool):
        if isinstance(value, int) or (tp is float and isinstance(value, float)):
            return tp(value)
        if isinstance(value, str):
            try:
                return tp(value)
            except ValueError:
                pass
    raise ConfigError(f"{where}: expected {what}, got {value!r}")


def _string(value: Any, where: str) -> str:
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    raise ConfigError(f"{where}: expected a string, got {value!r}")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check (and gently coerce) `value` against the annotation `tp`."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return _union(value, tp, where)
    if origin is typing.Literal:
        return _literal(value, tp, where)
    if origin in (list, tuple):
        return _sequence(value, tp, where)
    if origin is dict:
        return _mapping(value, tp, where)
    if dataclasses.is_dataclass(tp):
        return _section(value, tp, where)
    if tp is bool:
        return _bool(value, where)
    if tp in (int, float):
        return _number(value, tp, where)
    if tp is str:
        return _string(value, where)
    return value    # Any, or a type not checked here


def from_dict(cls: type[T], data: dict, where: str = "config") -> T:
    """Build dataclass `cls` from `data`, rejecting unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {unknown}; valid keys are {sorted(fields)}"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(value, hints[name], f"{where}.{name}")
    missing = [
        n for n, f in fields.items()
        if n not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{where}: missing required key(s) {missing}")
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate()
    return obj


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b=3`` -> (["a", "b"], 3); the value is parsed as YAML so types come out right."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value")
    key, raw = text.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({exc})") from None
    return key.split("."), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    data = dict(data)
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = {}
            elif not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {part!r} is not a mapping")
            child = dict(child)
            node[part] = child
            node = child
        node[path[-1]] = value
    return data


def load_config(cls: type[T], path: str | Path | None, overrides: list[str] | None = None) -> T:
    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {str(path)!r} is not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {str(path)!r} must hold a mapping at the top level")
    data = apply_overrides(data, overrides or [])
    return from_dict(cls, data, where=str(path) if path else "config")


def to_dict(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):  # fields marked omit_if_none are left out while unset
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                if not (f.metadata.get("omit_if_none") and getattr(obj, f.name) is None)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def dump_config(obj: Any) -> str:
    return yaml.safe_dump(to_dict(obj), sort_keys=False)
