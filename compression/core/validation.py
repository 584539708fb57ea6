"""Small checks used by config dataclasses' __post_init__; each raises a one-line ConfigError."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from fnmatch import fnmatchcase
from typing import Any

from compression.core.errors import ConfigError

# Upper bounds for keys whose dataclass gives none (in_range(..., hi=None)): a value beyond these
# is a typo, and would fail only after minutes of training or an allocation of gigabytes
# (measure.batch_size=100000000 asked for 25 GB). Patterns are fnmatch'ed on the key; first wins.
CEILINGS: tuple[tuple[str, float], ...] = (
    ("*.lr", 10.0),  # Adam/SGD steps beyond this diverge on any model here
    ("*.weight_decay", 1.0),  # decay >= 1 per step zeroes every weight
    ("model.width", 16.0),  # 16x the built-in widths: LeNet-300-100 at 4800-1600
    ("measure.batch_size", 16384),
    ("train.batch_size", 65536),
    ("*.epochs", 10000),
    ("*.round_epochs", 10000),
    ("measure.warmup", 100000),
    ("measure.repeats", 100000),
    ("measure.threads", 4096),
)


def ceiling(key: str) -> float | None:
    return next((hi for pattern, hi in CEILINGS if fnmatchcase(key, pattern)), None)


def number(key: str, value: Any, *, integer: bool = False) -> float:
    ok = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not ok:
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"{key}={value!r} must be {kind}")
    if not math.isfinite(value):  # nan passes every comparison below: refuse it here
        raise ConfigError(f"{key}={value!r} must be a finite number")
    return float(value) if isinstance(value, float) else int(value)


def finite_tree(values: Any, key: str = "") -> None:
    """Refuse a NaN or infinite float anywhere in a (nested) config: every float of every
    section, including those no dataclass field checks (a user model's keyword arguments, the
    entries of a mapping or list)."""
    if isinstance(values, Mapping):
        for k, val in values.items():
            finite_tree(val, f"{key}.{k}" if key else str(k))
    elif isinstance(values, list | tuple):
        for i, val in enumerate(values):
            finite_tree(val, f"{key}[{i}]")
    elif isinstance(values, float) and not math.isfinite(values):
        raise ConfigError(f"{key}={values!r} must be a finite number")


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
    """Check lo <= value <= hi (or strict where *_open); the message prints the interval. With
    no `hi`, the key's sane ceiling (CEILINGS) applies, if it has one."""
    number(key, value, integer=integer)
    if hi is None and (hi := ceiling(key)) is not None:
        hi_open = False
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
