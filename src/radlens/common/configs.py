"""Typed config dataclasses back from JSON.

``dataclasses.asdict`` of a config, written as strict JSON (``radlens.common.atomic``), loses its
types: tuples become lists, nested configs dicts, infinite floats the strings ``"inf"``/``"-inf"``
(numbers themselves are kept as they are, so the config's JSON is the same again).
:func:`from_json_dict` undoes that from the dataclass's type hints, so a config recorded in a
file (a shard's ``shard.json``) builds the same object again.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar, Union

from radlens.errors import ConfigError

T = TypeVar("T")


def from_json_dict(cls: type[T], data: dict[str, Any]) -> T:
    """``cls(**data)`` with every value converted to its field's type (nested dataclasses, tuples, floats)."""
    try:
        return _build(cls, data)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"not a {cls.__name__}: {err}") from None


def _build(cls: type[T], data: dict[str, Any]) -> T:
    if not isinstance(data, dict):
        raise TypeError(f"expected a mapping for {cls.__name__}, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(data) - set(hints))
    if unknown:
        raise TypeError(f"unknown {cls.__name__} key(s) {unknown}")
    return cls(**{name: _typed(value, hints[name]) for name, value in data.items()})


def _typed(value: Any, hint: Any) -> Any:
    """``value`` (from JSON) as the type ``hint`` asks for."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if value is None:
        return None
    if origin in (Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        return _typed(value, options[0]) if len(options) == 1 else value
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return _build(hint, value)
    if origin is tuple and isinstance(value, (list, tuple)):
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_typed(v, args[0]) for v in value)
        return tuple(_typed(v, a) for v, a in zip(value, args)) if args else tuple(value)
    if hint is float and isinstance(value, str):
        return float(value)  # "inf"/"-inf"/"nan", as strict JSON writes them (numbers stay as written)
    return value
