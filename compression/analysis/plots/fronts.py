"""Pareto-front figures: one panel per (model, data) pair with every run, the front as a step
line, and the sweet spot and knee marked and labelled."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

from compression.analysis.pareto import Objective
from compression.analysis.plots.base import (
    AXIS_LABELS,
    _baseline,
    _percent_axis,
    _q,
    new_figure,
)
from compression.analysis.plots.ticks import log_axis, value_formatter


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
