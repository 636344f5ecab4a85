"""The typed builder: a dataclass from a plain mapping, every key known (an unknown one gets a close-match
suggestion) and every value of its annotated type (ints are accepted for floats). Used for the schema's sections
and for the options dataclasses of methods, tasks and readers."""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Sequence
from typing import Any

from ..errors import ConfigError


def type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def coerce(value: Any, tp: Any, key: str) -> Any:
    """``value`` checked against annotation ``tp`` (ints are accepted for floats); raises ConfigError."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return coerce(value, option, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key} expects {type_name(tp)}, got {value!r}")
    if tp is type(None):
        if value is None:
            return None
    elif origin is list:
        if isinstance(value, (list, tuple)):
            (item,) = typing.get_args(tp) or (Any,)
            return [coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    elif origin is dict or tp is dict:
        if isinstance(value, dict):
            return dict(value)
    elif tp is Any:
        return value
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    raise ConfigError(f"{key} expects {type_name(tp)}, got {value!r}")


def fields_of(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def unknown_key(key: str, known: Sequence[str], prefix: str) -> ConfigError:
    full = [f"{prefix}{k}" for k in known]
    close = difflib.get_close_matches(f"{prefix}{key}", full, n=1)
    hint = f"; did you mean {close[0]}?" if close else f"; known keys: {', '.join(full)}"
    return ConfigError(f"unknown config key {prefix}{key}{hint}")


def build(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    hints = fields_of(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in hints:
            raise unknown_key(key, list(hints), prefix)
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            value = {} if value is None else value  # an empty section (`train:` with nothing under it)
            if not isinstance(value, dict):
                raise ConfigError(f"{prefix}{key} must be a mapping, got {value!r}")
            kwargs[key] = build(tp, value, f"{prefix}{key}.")
        else:
            kwargs[key] = coerce(value, tp, f"{prefix}{key}")
    return cls(**kwargs)
