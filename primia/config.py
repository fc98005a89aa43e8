"""Typed configuration: dataclasses read from TOML (or a dict) and validated once.

A configuration class is a dataclass whose fields carry their defaults; :func:`from_mapping`
builds one from a parsed TOML table, rejecting unknown keys and values of the wrong type
with a message that names the key, what was expected and where it came from. Nested
dataclasses map to TOML tables. Range checks live in each class's ``__post_init__`` and
raise :class:`~primia.errors.ConfigError`.

>>> from dataclasses import dataclass
>>> @dataclass
... class Example:
...     rounds: int = 3
>>> from_mapping(Example, {"rounds": 5}).rounds
5
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import tomli_w

from primia.errors import ConfigError
from primia.files import atomic_write_bytes

T = TypeVar("T")


def from_mapping(cls: type[T], values: typing.Mapping[str, Any], *, where: str = "config") -> T:
    """Build the dataclass ``cls`` from ``values``, checking keys and types."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    hints = typing.get_type_hints(cls)
    fields = {field.name: field for field in dataclasses.fields(cls) if field.init}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)}; "
            f"valid keys are: {', '.join(sorted(fields))}"
        )
    kwargs = {
        name: _convert(value, hints[name], f"{where}.{name}") for name, value in values.items()
    }
    try:
        return cls(**kwargs)
    except TypeError as error:  # a required field without a default was not given
        raise ConfigError(f"{where}: {error}") from error


def read_toml(path: Path) -> dict[str, Any]:
    """The parsed TOML document at ``path``, or a :class:`ConfigError` saying what is wrong."""
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError as error:
        raise ConfigError(f"config file {path} does not exist; check the path") from error
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config file {path} is not valid TOML: {error}") from error


def load_toml(cls: type[T], path: Path, *, table: str | None = None) -> T:
    """Read ``path`` (or one ``[table]`` of it) into ``cls``."""
    document = read_toml(path)
    values = document.get(table, {}) if table else document
    return from_mapping(cls, values, where=f"{path}" + (f"[{table}]" if table else ""))


def rebase_paths(config: T, base: Path) -> T:
    """``config`` with every relative path (also in nested dataclasses) taken from ``base``.

    Paths in a config file mean the same wherever the command runs: relative to the file.
    """
    changes: dict[str, Any] = {}
    for field in dataclasses.fields(config):  # type: ignore[arg-type]
        value = getattr(config, field.name)
        if isinstance(value, Path) and not value.is_absolute():
            changes[field.name] = base / value
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            changes[field.name] = rebase_paths(value, base)
    return dataclasses.replace(config, **changes)  # type: ignore[type-var]


def to_mapping(config: Any) -> dict[str, Any]:
    """The dataclass as TOML-ready values: paths as strings, ``None`` left out."""
    result: dict[str, Any] = {}
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if value is None:
            continue
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = to_mapping(value)
        elif isinstance(value, Path):
            value = str(value)
        elif isinstance(value, tuple | list):
            value = [to_mapping(item) if dataclasses.is_dataclass(item) else item for item in value]
        result[field.name] = value
    return result


def write_toml(config: Any, path: Path) -> None:
    """Write ``config`` as TOML, atomically."""
    atomic_write_bytes(path, tomli_w.dumps(to_mapping(config)).encode())


def _convert(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        if value is None:
            return None
        errors = []
        for option in options:
            try:
                return _convert(value, option, where)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0])
    if origin is typing.Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            choices = ", ".join(repr(a) for a in allowed)
            raise ConfigError(f"{where}: {value!r} is not one of {choices}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item_hint, *_) = typing.get_args(hint) or (Any,)
        items = [_convert(item, item_hint, f"{where}[{i}]") for i, item in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if dataclasses.is_dataclass(hint):
        if isinstance(value, typing.cast(type, hint)):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        return from_mapping(typing.cast(type, hint), value, where=where)
    if hint is Any:
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if hint is Path:
        if not isinstance(value, str | Path):
            raise ConfigError(f"{where}: expected a path, got {value!r}")
        return Path(value)
    raise TypeError(f"{where}: unsupported config type {hint!r}")
