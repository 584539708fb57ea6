"""Eager and deployment-runtime figures side by side (runs logged with runtime=onnxruntime or
executorch carry rt_* metrics next to the eager ones).

The sweet spot `--by rt_latency` ranks by `rt_relative_latency` = 1 / rt_speedup: the final
model's runtime latency as a fraction of the runtime's own fp32 baseline, both timed
interleaved in one process, so runs timed at different moments of a shared machine compare
fairly (raw milliseconds drift with the load; their ratio much less)."""

from __future__ import annotations

import numpy as np
import pandas as pd

RANK_COLUMN = "rt_relative_latency"
# (eager column, runtime column, what) shown side by side
PAIRS = (("accuracy", "rt_accuracy", "test accuracy"),
         ("latency_ms", "rt_latency_ms", "batch-1 latency (ms)"),
         ("batch_latency_ms", "rt_batch_latency_ms", "batch-N latency (ms)"),
         ("speedup", "rt_speedup", "speed-up over fp32, batch 1"),
         ("batch_speedup", "rt_batch_speedup", "speed-up over fp32, batch N"),
         ("size_bytes", "rt_size_bytes", "file bytes"))


def add_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """`rt_relative_latency` where rt_speedup was logged (the frame is changed and returned)."""
    if "rt_speedup" in frame:
        frame[RANK_COLUMN] = 1.0 / frame["rt_speedup"].astype(float)
    return frame


def has_runtime(frame: pd.DataFrame) -> bool:
    return "rt_accuracy" in frame and bool(frame["rt_accuracy"].notna().any())


def side_by_side(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per run with a runtime: its label, runtime, and each eager / runtime pair."""
    rows = frame[frame["rt_accuracy"].notna()]
    cols = ["run_id", "label"] + (["runtime.name"] if "runtime.name" in rows else [])
    out = rows[[c for c in cols if c in rows]].copy()
    for eager, rt, _ in PAIRS:
        if eager in rows and rt in rows:
            out[f"eager_{eager}"] = rows[eager]
            out[rt] = rows[rt]
    return out.reset_index(drop=True)


def speedup_figure(table: pd.DataFrame, title: str) -> object:
    """Grouped bars: each run's speed-up over its fp32 baseline, eager vs runtime, batch 1 and
    batch N (1.0 = as fast as fp32 in the same engine)."""
    from compression.analysis import plots

    fig, axes = plots.new_figure()
    ax = axes[0, 0]
    bars = [("eager_speedup", "eager, batch 1"), ("rt_speedup", "runtime, batch 1"),
            ("eager_batch_speedup", "eager, batch N"), ("rt_batch_speedup", "runtime, batch N")]
    bars = [(c, n) for c, n in bars if c in table]
    idx = np.arange(len(table))
    width = 0.8 / max(1, len(bars))
    for k, (col, name) in enumerate(bars):
        ax.bar(idx + k * width, table[col].astype(float), width, label=name)
    ax.axhline(1.0, color="black", lw=0.8, ls="--")
    ax.set_xticks(idx + width * (len(bars) - 1) / 2, table["label"], rotation=30, ha="right",
                  fontsize=8)
    ax.set(ylabel="speed-up over fp32 (same engine)", title=title)
    fig.legend(loc="outside lower center", ncols=4, frameon=False)
    return fig
