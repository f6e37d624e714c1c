"""Option values checked against the config dataclass they fill: one-line errors naming the option.

Every config dataclass (the trainer's, the splits', a model's ...) declares its fields' types;
values from a TOML file, ``--set KEY=VALUE`` or a saved ``config.json`` are checked against them
before the dataclass is built, so a wrong type is an error naming the option instead of a
traceback from deep inside a model. Numbers must be finite, integers must fit int64, seeds must
be non-negative; lists become tuples where a field is a tuple.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any

from graphrec.errors import GraphrecError

_INT64 = 2**63


def _kind(tp: Any) -> str:
    """How a type reads in an error message."""
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(
        tp, getattr(tp, "__name__", str(tp)))


def _check(name: str, value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check(name, value, arg, where)
            except GraphrecError as e:
                errors.append(e)
        raise errors[0] if errors else GraphrecError(f"{where}{name}: unexpected value {value!r}")
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise GraphrecError(f"{where}{name}: expected a list, got {value!r}")
        item = args[0] if args else Any
        return tuple(_check(f"{name}[{i}]", v, item, where) for i, v in enumerate(value))
    if tp is Any or origin is dict or tp is dict:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise GraphrecError(f"{where}{name}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise GraphrecError(f"{where}{name}: expected an integer, got {value!r}")
        if not -_INT64 <= value < _INT64:
            raise GraphrecError(f"{where}{name}: {value} does not fit a 64-bit integer")
        if "seed" in name and value < 0:
            raise GraphrecError(f"{where}{name}: a seed must be >= 0, got {value}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise GraphrecError(f"{where}{name}: expected a number, got {value!r}")
        if not math.isfinite(float(value)):
            raise GraphrecError(f"{where}{name}: must be a finite number, got {value!r}")
        return float(value) if isinstance(value, int) and abs(value) < 2**53 else value
    if tp is str:
        if not isinstance(value, str):
            raise GraphrecError(f"{where}{name}: expected a string, got {value!r}")
        return value
    return value


def checked(cls: type, values: dict[str, Any], where: str = "",
            label: dict[str, str] | None = None) -> dict[str, Any]:
    """``values`` checked (and lists made tuples) against the fields of dataclass ``cls``;
    ``where`` prefixes the messages (``"--set "``, ``"run.toml: [train] "``) and ``label`` names
    a field otherwise (its command-line flag). Unknown keys are left for the caller, which
    names the known ones."""
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    out = {}
    for key, value in values.items():
        if key in known:
            name = (label or {}).get(key, key)
            if name != key and "seed" in key:
                name = f"{name} (seed)"
            value = _check(name, value, hints[key], where)
        out[key] = value
    return out


__all__ = ["checked"]
