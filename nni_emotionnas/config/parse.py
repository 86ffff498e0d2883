"""Typed parsing of YAML config sections into dataclasses, with errors that name the offending key."""

from __future__ import annotations

import dataclasses
import math
import re
import reprlib
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

from nni_emotionnas.errors import ConfigError

T = TypeVar("T")


class NumberLoader(yaml.SafeLoader):
    """PyYAML follows YAML 1.1, where a float needs a dot: `1e-3` would be the string "1e-3". YAML 1.2 and
    every user read it as a number, so this loader does too."""


NumberLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


# values a config file may expand to through YAML aliases (`*name`); an experiment file holds a few hundred
MAX_EXPANDED_VALUES = 100_000


def read_text(path: Path, what: str = "file") -> str:
    """A UTF-8 text file (with or without a byte-order mark); other bytes are a `ConfigError` naming the file."""
    try:
        return Path(path).read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start} is {exc.object[exc.start]:#04x}); "
                          f"save the {what} as UTF-8") from exc


def expanded_size(data: Any, limit: int = MAX_EXPANDED_VALUES) -> int:
    """How many values `data` holds once every alias is written out, counting each shared value once per use
    (shared values are measured once, so this costs the document's size, not the expansion's); stops past
    `limit`. A value that contains itself counts as past the limit."""
    sizes: dict[int, int] = {}

    def size(value: Any) -> int:
        if not isinstance(value, (dict, list)):
            return 1
        key = id(value)
        if key in sizes:
            return sizes[key]
        sizes[key] = limit + 1  # while being measured: a value reached again from inside contains itself
        children = [*value.keys(), *value.values()] if isinstance(value, dict) else value
        total = 1
        for child in children:
            total += size(child)
            if total > limit:
                break
        sizes[key] = total
        return total

    return size(data)


def load_yaml(path: Path) -> dict[str, Any]:
    """Reads a YAML mapping; a missing file, non-UTF-8 bytes, bad syntax, a non-mapping or aliases that expand
    past `MAX_EXPANDED_VALUES` values (a "billion laughs" file) are a `ConfigError`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.load(read_text(path, "config file"), Loader=NumberLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({clip(str(exc))})") from exc
    except RecursionError as exc:
        raise ConfigError(f"{path}: nested too deeply to be a config file") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    if expanded_size(data) > MAX_EXPANDED_VALUES:
        raise ConfigError(f"{path}: its YAML aliases (*name) expand to more than {MAX_EXPANDED_VALUES} values; "
                          "write the values out or use fewer nested aliases")
    return data


_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxstring, _SHORT.maxother = 3, 60, 60
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxdict = _SHORT.maxset = 6


def shown(value: Any) -> str:
    """`repr(value)` short enough for a one-line error, whatever the value's size."""
    return clip(_SHORT.repr(value))


def clip(text: str, limit: int = 300) -> str:
    """`text` cut to `limit` characters (a message may quote a value of any size)."""
    return text if len(text) <= limit else f"{text[:limit - 5]}[...]"


def parse(cls: type[T], data: Any, where: str) -> T:
    """Builds dataclass `cls` from `data`; unknown keys and wrong types raise `ConfigError` naming `where.key`."""
    if isinstance(data, cls):
        return data
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown key (known: {', '.join(sorted(fields))})")
    values = {}
    for name, field in fields.items():
        key = f"{where}.{name}"
        if name in data:
            values[name] = _coerce(hints[name], data[name], key)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{key}: required key is missing")
    try:
        return cls(**values)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{where}: {clip(str(exc))}") from exc


def _coerce(hint: Any, value: Any, key: str) -> Any:
    origin = get_origin(hint)
    args = get_args(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(option, value, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: {shown(value)} fits none of {hint}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: {shown(value)} is not one of {', '.join(map(repr, args))}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__}")
        item = args[0] if args else Any
        items = [_coerce(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
        kt, vt = args if args else (Any, Any)
        return {
            (_coerce(kt, k, f"{key}.{k}") if get_origin(kt) is Literal else str(k)): _coerce(vt, v, f"{key}.{k}")
            for k, v in value.items()
        }
    if dataclasses.is_dataclass(hint):
        return parse(hint, value, key)
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ConfigError(f"{key}: must be a finite number, got {value}")
        return float(value)
    if hint is int and isinstance(value, bool):
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if hint is Path and isinstance(value, str):
        return Path(value)
    if isinstance(hint, type) and not isinstance(value, hint):
        raise ConfigError(f"{key}: expected {hint.__name__}, got {type(value).__name__} {shown(value)}")
    return value
