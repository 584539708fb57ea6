"""Drawing only, for the autotune page: the search trace and the winner's per-layer allocation.
Same fixed size and dpi as every other figure of the report (plots.new_figure)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

from compression.analysis.autotune import COMPLETE, FAILED, PRUNED, trace
from compression.analysis.plots import log_axis, new_figure, value_formatter

LOG_METRICS = ("size_bytes",)  # objectives that span decades: log axis


def search_trace(trials: pd.DataFrame, *, metric: str, minimize: bool, drop_metric: str,
                 max_drop: float, winner: int | None, title: str) -> Figure:
    """Objective per trial: feasible trials filled, infeasible ones hollow grey crosses, the best
    feasible so far as a step line; PRUNED and FAILED trials (no objective) as marks on a strip
    at the bottom of the axes."""
    fig, axes = new_figure()
    ax = axes[0, 0]
    done = trials[trials["state"] == COMPLETE]
    ok, bad = done[done["feasible"]], done[~done["feasible"]]
    ax.scatter(bad["trial"], bad["value"], marker="x", s=40, color="0.55", zorder=3,
               label=f"over the target: {drop_metric} > {max_drop:g} ({len(bad)})")
    ax.scatter(ok["trial"], ok["value"], s=42, color="C0", zorder=4,
               label=f"within the target ({len(ok)})")
    best = trace(trials, minimize)
    if best.notna().any():
        ax.step(trials["trial"], best, where="post", color="C3", lw=2, zorder=5,
                label=f"best within the target so far ({'lowest' if minimize else 'highest'})")
    if winner is not None and winner in set(ok["trial"]):
        w = ok[ok["trial"] == winner].iloc[0]
        ax.scatter([w["trial"]], [w["value"]], marker="*", s=320, color="C2", ec="black",
                   zorder=6, label=f"winner (trial {winner})")
    # trials without an objective: a strip along the bottom edge (axes coordinates in y)
    strip = ax.get_xaxis_transform()
    for state, marker, color in ((PRUNED, "v", "C1"), (FAILED, "X", "C3")):
        rows = trials[trials["state"] == state]
        if len(rows):
            ax.scatter(rows["trial"], np.full(len(rows), 0.03), transform=strip, marker=marker,
                       s=60, color=color, zorder=4, clip_on=False,
                       label=f"{state} ({len(rows)}; stopped early, no {metric})"
                       if state == PRUNED else f"{state} ({len(rows)})")
            ax.margins(y=0.12)  # room for the strip below the lowest point
    values = done["value"].to_numpy(dtype=float)
    if metric in LOG_METRICS and np.isfinite(values).any():
        log_axis(ax.yaxis, metric, values[np.isfinite(values)])
    else:
        ax.yaxis.set_major_formatter(value_formatter(metric))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    direction = "lower is better" if minimize else "higher is better"
    ax.set(xlabel="trial number", ylabel=f"{metric} ({direction})", title=title)
    fig.legend(loc="outside lower center", ncols=3, frameon=False)
    return fig


def allocation_bars(table: pd.DataFrame, *, uniform: float | None, title: str) -> Figure:
    """Sparsity per layer (and bits per layer beside it when the run allocated them)."""
    has_bits = "bits" in table and table["bits"].notna().any()
    fig, axes = new_figure(1, 2 if has_bits else 1)
    idx = np.arange(len(table))
    rotate = {"rotation": 45, "ha": "right"} if len(table) > 6 else {}
    ax = axes[0, 0]
    measured = table.attrs.get("source", "").startswith("measured")
    bars = ax.bar(idx, table["sparsity"], color="C2",
                  label="measured sparsity" if measured else "allocated sparsity")
    ax.bar_label(bars, labels=[f"{s:.1%}" for s in table["sparsity"]], padding=2, fontsize=9)
    if uniform is not None:
        ax.axhline(uniform, color="black", ls="--", lw=1.2,
                   label=f"uniform allocation ({uniform:.1%} every layer)")
        fig.legend(loc="outside lower center", ncols=2, frameon=False)  # clear of the bars
    ax.set_ylim(0, 1.1)
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=None))
    ax.set_xticks(idx, table["layer"], **rotate)
    ax.set(xlabel="layer", ylabel="sparsity (share of weights zeroed)",
           title="sparsity per layer" if has_bits else "")
    if has_bits:
        bx = axes[0, 1]
        bits = bx.bar(idx, table["bits"], color="C4")
        bx.bar_label(bits, labels=[f"{b:g}" for b in table["bits"]], padding=2, fontsize=9)
        bx.set_xticks(idx, table["layer"], **rotate)
        bx.set_ylim(0, max(float(table["bits"].max()), 8) * 1.12)
        bx.yaxis.set_major_locator(MaxNLocator(integer=True))
        bx.set(xlabel="layer", ylabel="weight bits", title="bits per layer")
    fig.suptitle(title)
    return fig
