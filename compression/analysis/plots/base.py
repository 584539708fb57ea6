"""Figure basics every plot shares: size, dpi and formats, the Agg backend, axis labels, and the
quality axis (percent or raw values, the dense baseline and its tolerance band).

Kept apart so each kind of plot imports one place for what makes all figures alike: a fixed
size in inches saved at a fixed dpi without tight cropping, so every PNG has a known pixel size
(FIGSIZE * DPI).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: files only, never a window

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

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

