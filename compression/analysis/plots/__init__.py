"""Drawing only: every function takes analysis tables and returns a matplotlib Figure.

Agg backend (no display needed). Figures have a fixed size in inches and are saved at a fixed
dpi without tight cropping, so every PNG has a known pixel size (FIGSIZE * DPI).

One module per kind of figure (accuracy lines, Pareto fronts, per-layer views) over the shared
basics (`base`) and tick formatting (`ticks`); this package re-exports them all, so
`compression.analysis.plots.<name>` stays the one address callers use.
"""

from compression.analysis.pareto import Objective
from compression.analysis.plots.base import (
    AXIS_LABELS,
    DPI,
    FIGSIZE,
    FORMATS,
    LINESTYLES,
    LOG_SPAN,
    MARKERS,
    Figure,
    new_figure,
    save_figure,
)
from compression.analysis.plots.fronts import ParetoPanel, pareto
from compression.analysis.plots.lines import curves, sensitivity
from compression.analysis.plots.per_layer import layer_bars, layer_sparsity, weight_histograms
from compression.analysis.plots.ticks import (
    MIN_TICKS,
    TICK_SUBS,
    log_axis,
    log_ticks,
    value_formatter,
)

__all__ = [
    "AXIS_LABELS", "DPI", "FIGSIZE", "FORMATS", "LINESTYLES", "LOG_SPAN", "MARKERS", "MIN_TICKS",
    "TICK_SUBS", "Figure", "Objective", "ParetoPanel", "curves", "layer_bars", "layer_sparsity",
    "log_axis", "log_ticks", "new_figure", "pareto", "save_figure", "sensitivity",
    "value_formatter", "weight_histograms",
]
