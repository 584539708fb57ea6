"""Per-layer figures of one run: parameters and bytes, sparsity, and weight histograms."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter, PercentFormatter

from compression.analysis.plots.base import LOG_SPAN, new_figure


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

