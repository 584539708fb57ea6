"""Accuracy-line figures: accuracy against a compression axis per series (the curves), and
against the sparsity of one pruned layer (per-layer sensitivity), each over the dense baseline
and its tolerance band."""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from compression.analysis.derive import SMALL_DENSE
from compression.analysis.plots.base import (
    AXIS_LABELS,
    LINESTYLES,
    MARKERS,
    _baseline,
    _percent_axis,
    _q,
    new_figure,
)
from compression.analysis.plots.ticks import log_axis, value_formatter


def curves(curve_table: pd.DataFrame, auc: pd.DataFrame, *, x_column: str, x_label: str,
           log_x: bool,
           baseline: float | None, tolerance: float, title: str,
           metric: str | None = None) -> Figure:
    """Mean accuracy per series against x, a band of +-1 std over seeds where there are several,
    the dense baseline line and tolerance band; the area under each curve in the legend."""
    fig, axes = new_figure()
    ax = axes[0, 0]
    areas = auc.set_index("series")
    fmt = value_formatter(x_column) if log_x else (lambda v: f"{v:.2f}")
    for i, (series, g) in enumerate(curve_table.groupby("series", sort=True)):
        small = series.startswith(SMALL_DENSE)
        # Series with equal accuracy (int8 vs fp32) would hide each other: distinct markers and
        # dashes, and each line thinner than the ones drawn before it, so a line that coincides
        # with an earlier one shows inside it.
        style = ({"ls": "--", "marker": "s"} if small else
                 {"ls": LINESTYLES[i % len(LINESTYLES)], "marker": MARKERS[i % 6]})
        style["lw"] = max(1.0, 3.4 - 0.6 * i)
        style["ms"] = max(4.0, 9.0 - 1.2 * i)
        seeds = int(g["n"].max())
        a = areas.loc[series]
        # mean accuracy over the series' own x range (area / range): comparable across series
        # of different ranges, which the raw area is not; a single point has no range
        span = (f"over {fmt(a['x_min'])}-{fmt(a['x_max'])}" if a["x_max"] > a["x_min"]
                else f"at {fmt(a['x_min'])}")
        label = (f"{series}: mean {_q(a['mean_y'], metric)} {span}"
                 + (f", {seeds} seeds" if seeds > 1 else ""))
        color = f"C{i % 10}"
        ax.plot(g["x"], g["y_mean"], color=color, mfc="none" if i % 2 else color, zorder=2 + i,
                label=label, **style)
        if seeds > 1:
            ax.fill_between(g["x"], g["y_mean"] - g["y_std"], g["y_mean"] + g["y_std"],
                            color=color, alpha=0.15, lw=0)
    _baseline(ax, baseline, tolerance, metric)
    if log_x:
        log_axis(ax.xaxis, x_column, curve_table["x"].dropna().to_numpy(dtype=float))
    ax.set(xlabel=x_label, ylabel=AXIS_LABELS["accuracy"], title=title)
    _percent_axis(ax, metric)
    fig.legend(loc="outside lower center", ncols=2, frameon=False)
    return fig


def sensitivity(table: pd.DataFrame, *, baseline: float | None, tolerance: float,
                title: str, metric: str | None = None) -> Figure:
    """Accuracy against the sparsity of the one pruned layer, one line per layer."""
    fig, axes = new_figure()
    ax = axes[0, 0]
    for i, (layer, g) in enumerate(table.groupby("layer", sort=False)):
        color = f"C{i % 10}"
        ax.plot(g["sparsity"], g["y_mean"], marker="o", color=color, label=f"only {layer} pruned")
        if g["n"].max() > 1:
            ax.fill_between(g["sparsity"], g["y_mean"] - g["y_std"], g["y_mean"] + g["y_std"],
                            color=color, alpha=0.15, lw=0)
    _baseline(ax, baseline, tolerance, metric)
    ax.xaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
    _percent_axis(ax, metric)
    ax.set(xlabel="sparsity of the pruned layer (%)", ylabel=AXIS_LABELS["accuracy"],
           title=title)
    fig.legend(loc="outside lower center", ncols=4, frameon=False)
    return fig
