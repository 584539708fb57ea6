"""Drawing only: every function takes analysis tables and returns a matplotlib Figure.

Agg backend (no display needed). Figures have a fixed size in inches and are saved at a fixed
dpi without tight cropping, so every PNG has a known pixel size (FIGSIZE * DPI).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: files only, never a window

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axis import Axis
from matplotlib.figure import Figure
from matplotlib.ticker import (
    EngFormatter,
    FixedLocator,
    FuncFormatter,
    LogLocator,
    MaxNLocator,
    NullFormatter,
    PercentFormatter,
)

from compression.analysis.derive import SMALL_DENSE
from compression.analysis.pareto import Objective
from compression.analysis.tables import points
from compression.training import quality

FIGSIZE = (10.0, 6.0)  # inches
DPI = 120  # PNG: 1200 x 720 pixels
FORMATS = ("png", "svg", "pdf")
MARKERS = "o^vDPX"
LINESTYLES = ("-", "--", "-.", ":")
LOG_SPAN = 100  # bars get a log axis when their values span more than this factor
plt.rcParams.update({"font.size": 11, "axes.titlesize": 13, "axes.labelsize": 11,
                     "legend.fontsize": 9, "axes.grid": True, "grid.alpha": 0.3})

AXIS_LABELS = {
    "size_bytes": "artifact file size (log scale)",
    "latency_ms": "batch-1 latency (log scale)",
    "relative_latency": "batch-1 latency relative to the run's own baseline, timed interleaved "
                        "(1 / speedup; log scale)",
    "rt_latency_ms": "batch-1 latency in the deployment runtime (log scale)",
    "effective_flops": "effective FLOPs per sample (log scale)",
    "accuracy": "test accuracy (%)",
}


def new_figure(nrows: int = 1, ncols: int = 1, **kw: object) -> tuple[Figure, np.ndarray]:
    fig, axes = plt.subplots(nrows, ncols, figsize=FIGSIZE, dpi=DPI, layout="constrained",
                             squeeze=False, **kw)
    return fig, axes


def save_figure(fig: Figure, out_dir: Path, stem: str,
                formats: Sequence[str] = FORMATS) -> list[Path]:
    """Write `stem`.png/.svg/.pdf into out_dir and close the figure."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in formats:
        path = out_dir / f"{stem}.{ext}"
        fig.savefig(path, dpi=DPI, metadata={"Date": None} if ext == "svg" else None)
        paths.append(path)
    plt.close(fig)
    return paths


def _fraction(metric: str | None) -> bool:
    """Accuracy-like metrics are fractions shown in %; lower-is-better ones (perplexity) are
    shown as they are."""
    return quality.higher_is_better(metric)


def _q(value: float, metric: str | None) -> str:
    return f"{value:.1%}" if _fraction(metric) else f"{value:.4g}"


def _percent_axis(ax: plt.Axes, metric: str | None = None) -> None:
    if _fraction(metric):
        ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=None))
    else:  # shown as it is: no "(%)" in its label
        ax.set_ylabel(ax.get_ylabel().replace(" (%)", ""))


def _baseline(ax: plt.Axes, level: float | None, tolerance: float,
              metric: str | None = None) -> None:
    """The dense baseline as a line, with the band of accepted quality on its worse side
    (below it for accuracy, above it for perplexity)."""
    if level is None:
        return
    ax.axhline(level, color="black", lw=1.2, ls="--",
               label=f"dense baseline ({_q(level, metric)})")
    worse = level - tolerance if _fraction(metric) else level + tolerance
    ax.axhspan(min(level, worse), max(level, worse), color="black", alpha=0.08,
               label=f"tolerance ({points(tolerance, metric)})")


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


def _annotate(ax: plt.Axes, x: float, y: float, text: str, color: str, at: tuple) -> None:
    """Label placed in axes fractions (the empty lower middle of an accuracy-vs-cost plot), so
    it never runs into the title or off the axes, with an arrow to the point."""
    ax.annotate(text, (x, y), xytext=at, textcoords="axes fraction", fontsize=9,
                color=color, ha="left", va="center",
                bbox={"boxstyle": "round,pad=0.3", "fc": "white", "ec": color, "alpha": 0.9},
                # from the box's left edge: two labels stacked at one x then never cross arrows
                arrowprops={"arrowstyle": "->", "color": color, "relpos": (0.0, 0.5)})


@dataclass
class ParetoPanel:
    """One (model, data) pair's runs: a front, its sweet spot and knee, its own baseline."""

    title: str
    frame: pd.DataFrame
    on_front: pd.Series
    sweet: dict | None
    knee: dict | None
    baseline: float | None


def pareto(panels: Sequence[ParetoPanel], objectives: tuple[Objective, Objective], *,
           tolerance: float, title: str, metric: str | None = None) -> Figure:
    """One panel per (model, data): every run (dominated ones faint), the front as a step line,
    sweet spot and knee marked. Runs of different models or data never share a front or a
    baseline line."""
    fig, axes = new_figure(1, len(panels))
    compact = len(panels) > 1
    for ax, panel in zip(axes.flat, panels, strict=True):
        _pareto_panel(ax, panel, objectives, tolerance, compact, metric)
        if compact:
            ax.set_title(panel.title)
    if compact:
        fig.suptitle(title)
    else:
        axes[0, 0].set_title(title)
    # one legend for all panels (their entries are alike), below them
    handles, labels = axes[0, 0].get_legend_handles_labels()
    if compact:  # run counts differ per panel: name the kinds only
        labels = [lab.split(" (")[0] if lab.startswith(("dominated", "Pareto")) else lab
                  for lab in labels]
    fig.legend(handles, labels, loc="outside lower center", ncols=3, frameon=False)
    return fig


def _pareto_panel(ax: plt.Axes, panel: ParetoPanel, objectives: tuple[Objective, Objective],
                  tolerance: float, compact: bool = False, metric: str | None = None) -> None:
    """`compact` (several panels side by side): the marks' labels give values, not the runs'
    configurations, which the caption's CSV has, so that they fit a narrow panel."""
    x_obj, y_obj = objectives
    frame, on_front, sweet, knee = panel.frame, panel.on_front, panel.sweet, panel.knee
    x, y = frame[x_obj.column], frame[y_obj.column]
    ax.scatter(x[~on_front], y[~on_front], s=28, color="C0", alpha=0.45, lw=0,
               label=f"dominated runs ({int((~on_front).sum())})")
    front = frame[on_front].sort_values(x_obj.column)
    ax.step(front[x_obj.column], front[y_obj.column], where="post", color="C3", lw=1.5,
            zorder=6)
    # Above the sweet-spot and knee marks (drawn hollow), so the front is never hidden.
    ax.scatter(front[x_obj.column], front[y_obj.column], s=36, color="C3", zorder=7,
               label=f"Pareto front ({len(front)} run{'s' if len(front) != 1 else ''})")
    _baseline(ax, panel.baseline, tolerance, metric)
    if sweet and knee and knee["run_id"] in sweet.get("run_ids", [sweet["run_id"]]):
        sweet, knee = {**sweet, "label": f"{sweet['label']} (also the knee)"}, None
    marks = [(p, m, c, n) for p, m, c, n in ((knee, "D", "C1", "knee"),
                                             (sweet, "*", "C2", "sweet spot"))
             if p is not None and x_obj.column in p]
    # The higher point gets the higher label, so that the arrows do not cross.
    heights = iter((0.18, 0.36))
    by_height = sorted(marks, key=lambda t: t[0]["accuracy"])
    label_at = {n: (0.55 if compact else 0.40, next(heights)) for *_, n in by_height}
    for point, marker, color, name in marks:
        px, py = point[x_obj.column], point.get(y_obj.column, point["accuracy"])
        # the sweet spot is chosen on validation (a choice made on test would be fit to it):
        # say so, or a test point inside the band but past it on validation looks missed
        legend = (f"{name} (chosen on validation)"
                  if name == "sweet spot" and point.get("selected_on") == "val" else name)
        ax.scatter([px], [py], s=420 if marker == "*" else 160, marker=marker,
                   facecolors="none", edgecolors=color, linewidths=2.2, zorder=5, label=legend)
        seeds = point.get("seeds", 1)
        text = (f"{name}{'' if compact else ': ' + point['label']}\n{_q(py, metric)}, "
                f"{value_formatter(x_obj.column, places=1)(px)}"
                + (f" (mean of {seeds} seeds)" if seeds > 1 else ""))
        _annotate(ax, px, py, text, "black", label_at[name])
    if x_obj.log:
        log_axis(ax.xaxis, x_obj.column, x.dropna().to_numpy(dtype=float))
    else:
        ax.xaxis.set_major_formatter(value_formatter(x_obj.column))
    ax.set(xlabel=AXIS_LABELS.get(x_obj.column, x_obj.column), ylabel=AXIS_LABELS["accuracy"])
    _percent_axis(ax, metric)


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


def layer_bars(layers: pd.DataFrame, title: str) -> Figure:
    """Parameters (all / nonzero) and bytes (in memory / in the artifact file) per layer."""
    fig, axes = new_figure(1, 2)
    idx = np.arange(len(layers))
    panels = (
        (axes[0, 0], (("params", "all"), ("nonzero_params", "nonzero")), "parameters"),
        (axes[0, 1], (("bytes", "in memory"), ("artifact_bytes", "in artifact file")), "bytes"),
    )
    for ax, bars, unit in panels:
        shown = [(c, lab) for c, lab in bars if c in layers and layers[c].notna().any()]
        width = 0.8 / max(1, len(shown))
        for k, (col, lab) in enumerate(shown):
            ax.bar(idx + (k - (len(shown) - 1) / 2) * width, layers[col], width, label=lab)
        values = layers[[c for c, _ in shown]].to_numpy(dtype=float)
        positive = values[values > 0]
        log = positive.size and positive.max() / positive.min() > LOG_SPAN
        if log:
            ax.set_yscale("log")
        ax.yaxis.set_major_formatter(EngFormatter(unit="B" if unit == "bytes" else "", sep=" "))
        ax.set_xticks(idx, layers["layer"], rotation=45 if len(layers) > 6 else 0, ha="right"
                      if len(layers) > 6 else "center")
        ax.set(xlabel="layer", ylabel=f"{unit}{' (log scale)' if log else ''}",
               title=f"{unit} per layer")
        ax.legend()
    fig.suptitle(title)
    return fig


def layer_sparsity(layers: pd.DataFrame, title: str) -> Figure:
    fig, axes = new_figure()
    ax = axes[0, 0]
    bars = ax.bar(layers["layer"], layers["sparsity"], color="C2")
    ax.bar_label(bars, labels=[f"{s:.1%}" for s in layers["sparsity"]], padding=2, fontsize=9)
    ax.set_ylim(0, 1.08)
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=None))
    ax.set(xlabel="layer", ylabel="weights that are exactly zero (%)", title=title)
    if len(layers) > 6:
        ax.tick_params(axis="x", labelrotation=45)
    return fig


def weight_histograms(weights: dict[str, np.ndarray], title: str, bins: int = 60) -> Figure:
    """Nonzero weights per layer (zeros would swamp the bins; their share is in each title)."""
    n = max(1, len(weights))
    cols = min(3, n)
    rows = -(-n // cols)
    fig, axes = new_figure(rows, cols)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    for ax, (name, w) in zip(axes.flat, weights.items(), strict=False):
        nz = w[w != 0]
        ax.hist(nz, bins=bins, color="C0", histtype="stepfilled")  # one patch, fast to save
        ax.set_yscale("log")
        ax.set_title(f"{name}: {w.size:,} weights, {1 - nz.size / max(1, w.size):.1%} zero",
                     fontsize=10)
        ax.set_xlabel("weight value (nonzero)")
        ax.set_ylabel("count (log)")
    fig.suptitle(title)
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
