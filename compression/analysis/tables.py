"""Small table writers for reports: Markdown tables, readable numbers, and the run columns to
keep."""

from __future__ import annotations

import math
import numbers

import pandas as pd

# The run columns worth a glance, in this order, when present (runs.csv keeps every column).
BRIEF = ["run_id", "label", "series", "accuracy", "accuracy_drop", "sparsity", "size_bytes",
         "compression_ratio", "latency_ms", "speedup", "effective_flops", "seed"]


def brief(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[[c for c in BRIEF if c in frame]]


def number(value: float, unit: str = "") -> str:
    """A number as a person reads it: 36,450 (never 3.645e+04), 0.9415, 1.52; `unit` appended
    after a space. Values of 1000 and more are whole counts here (bytes, FLOPs, params)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return str(value)
    if math.isnan(value):
        return ""
    if abs(value) >= 1000 or (float(value).is_integer() and abs(value) >= 1):
        text = f"{value:,.0f}"
    elif value == 0:
        text = "0"
    else:
        text = f"{value:.4g}" if abs(value) >= 1e-4 else f"{value:.2e}"
    return f"{text} {unit}" if unit else text


def points(fraction: float, metric: str | None = None) -> str:
    """An accuracy fraction as points, with the right grammar: 0.01 -> '1 accuracy point'; a
    lower-is-better metric's tolerance as it is: '0.5 perplexity'."""
    from compression.training import quality

    if not quality.higher_is_better(metric):
        return f"{fraction:g} {quality.title(metric)}"
    n = fraction * 100
    return f"{n:g} accuracy point{'' if math.isclose(n, 1) else 's'}"


def _cell(value: object) -> str:
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return number(value)
    return str(value).replace("|", "\\|")


def markdown(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table."""
    cols = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |"
              for row in frame.itertuples(index=False)]
    return "\n".join(lines)
