"""Small checks used by config dataclasses' __post_init__; each raises a one-line ConfigError."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from compression.errors import ConfigError


def number(key: str, value: Any, *, integer: bool = False) -> float:
    ok = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not ok:
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"{key}={value!r} must be {kind}")
    return value


def in_range(
    key: str,
    value: Any,
    lo: float | None = None,
    hi: float | None = None,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
    integer: bool = False,
) -> None:
    """Check lo <= value <= hi (or strict where *_open); the message prints the interval."""
    number(key, value, integer=integer)
    too_low = lo is not None and (value <= lo if lo_open else value < lo)
    too_high = hi is not None and (value >= hi if hi_open else value > hi)
    if too_low or too_high:
        left = "(" if lo_open else "["
        right = ")" if hi_open else "]"
        lo_s = "-inf" if lo is None else f"{lo:g}"
        hi_s = "inf" if hi is None else f"{hi:g}"
        raise ConfigError(f"{key}={value!r} is out of range; allowed: {left}{lo_s}, {hi_s}{right}")


def one_of(key: str, value: Any, allowed: Iterable[Any]) -> None:
    allowed = list(allowed)
    if value not in allowed:
        raise ConfigError(
            f"{key}={value!r} is not a known value; allowed: {', '.join(map(str, allowed))}"
        )


def string_list(key: str, value: Any) -> list[str]:
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise ConfigError(f"{key}={value!r} must be a list of strings, e.g. [fc1, 'conv*']")
    for v in value:
        if not isinstance(v, str):
            raise ConfigError(f"{key} holds {v!r}; every entry must be a string")
    return list(value)
