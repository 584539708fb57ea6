"""Small table writers for reports: Markdown (no extra dependency) and CSV columns to keep."""

from __future__ import annotations

import math

import pandas as pd

# The run columns worth a glance, in this order, when present (runs.csv keeps every column).
BRIEF = ["run_id", "label", "series", "accuracy", "accuracy_drop", "sparsity", "size_bytes",
         "compression_ratio", "latency_ms", "speedup", "effective_flops", "seed"]


def brief(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[[c for c in BRIEF if c in frame]]


def _cell(value: object) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def markdown(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table."""
    cols = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |"
              for row in frame.itertuples(index=False)]
    return "\n".join(lines)
