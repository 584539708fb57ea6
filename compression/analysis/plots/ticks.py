"""Axis ticks in the column's own units: engineering-unit formatters and log axes labelled at
round values, shared by the accuracy curves, the Pareto fronts and the autotune plots."""

from __future__ import annotations

import numpy as np
from matplotlib.axis import Axis
from matplotlib.ticker import (
    EngFormatter,
    FixedLocator,
    FuncFormatter,
    LogLocator,
    MaxNLocator,
    NullFormatter,
)


def value_formatter(column: str, places: int | None = None) -> FuncFormatter:
    """Readable engineering units: 21.4 kB, 160 µs, 20 k (FLOPs), 5x (ratios)."""
    if column == "relative_latency":
        return FuncFormatter(lambda v, pos=None: f"{v:.3g}x")
    if column in ("latency_ms", "rt_latency_ms"):
        eng = EngFormatter(unit="s", sep=" ", places=places)
        return FuncFormatter(lambda v, pos=None: eng(v / 1000))
    if column == "compression_ratio":
        return FuncFormatter(lambda v, pos=None: f"{v:.3g}x")
    eng = EngFormatter(unit="B" if column.endswith("bytes") else "", sep=" ", places=places)
    return FuncFormatter(lambda v, pos=None: eng(v))


def log_axis(axis: Axis, column: str, values: np.ndarray | None = None) -> None:
    """Log scale labelled at round values in the column's units: 1-2-5 steps where the data
    spans decades, finer steps (1, 1.5, 2, 3, 4, 5, 6, 8) or evenly spaced values where it spans
    less, so that every axis carries at least MIN_TICKS labels (plain decade ticks would leave
    a narrow axis with one label, or none)."""
    axis.axes.set_xscale("log") if axis.axis_name == "x" else axis.axes.set_yscale("log")
    positive = values[values > 0] if values is not None else np.array([])
    ticks = log_ticks(positive.min(), positive.max()) if positive.size else None
    if ticks is not None:
        axis.set_major_locator(FixedLocator(ticks))
    elif positive.size:
        axis.set_major_locator(MaxNLocator(nbins=6, steps=[1, 2, 2.5, 5, 10]))
    else:
        axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(value_formatter(column, places=0))
    axis.set_minor_formatter(NullFormatter())


MIN_TICKS = 4
TICK_SUBS = ((1.0, 2.0, 5.0), (1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0))


def log_ticks(lo: float, hi: float) -> list[float] | None:
    """Round tick values within [lo, hi] (padded by 5% on a log scale, as the axis is), the
    coarsest series giving at least MIN_TICKS; None when even the finest gives fewer."""
    lo, hi = lo / 1.05, hi * 1.05
    decades = range(int(np.floor(np.log10(lo))), int(np.ceil(np.log10(hi))) + 1)
    for subs in TICK_SUBS:
        ticks = [s * 10.0**e for e in decades for s in subs if lo <= s * 10.0**e <= hi]
        if len(ticks) >= MIN_TICKS:
            return ticks
    return None
