"""Accuracy curves (pure data): mean and spread over seeds per configuration, area under each."""

from __future__ import annotations

import numpy as np
import pandas as pd

from compression.analysis.derive import DENSE

# Curve x-axes: column, axis label, whether it is drawn (and integrated) on a log scale.
X_AXES: dict[str, tuple[str, str, bool]] = {
    "sparsity": ("equivalent_sparsity", "sparsity (fraction of weights removed)", False),
    "ratio": ("compression_ratio", "compression ratio (full dense file / file, log)", True),
}


def aggregate_curves(frame: pd.DataFrame, x: str, y: str = "accuracy") -> pd.DataFrame:
    """One row per (series, configuration): x and y means over seeds, y's standard deviation
    (0 for one seed) and the number of seeds. The dense baseline is left to be drawn as a line."""
    cols = ["series", "config_key", x, y]
    data = frame.loc[~frame["role"].eq(DENSE), cols].dropna(subset=[x, y])
    grouped = data.groupby(["series", "config_key"], sort=False)
    out = grouped.agg(x=(x, "mean"), y_mean=(y, "mean"), y_std=(y, "std"), n=(y, "size"))
    out["y_std"] = out["y_std"].fillna(0.0)
    return out.reset_index().sort_values(["series", "x"], kind="stable").reset_index(drop=True)


def curve_auc(curves: pd.DataFrame, log_x: bool = False) -> pd.DataFrame:
    """Trapezoidal area under each series' mean curve over the x range it covers (log10 x on a
    log axis). Series cover different ranges, so x_min / x_max are reported beside the area;
    `mean_y` (area / range) compares series of different ranges."""
    rows = []
    for series, g in curves.groupby("series", sort=True):
        xs = np.log10(g["x"].to_numpy()) if log_x else g["x"].to_numpy()
        ys = g["y_mean"].to_numpy()
        area = float(np.trapezoid(ys, xs)) if len(g) > 1 else 0.0
        span = float(xs.max() - xs.min()) if len(g) else 0.0
        rows.append({"series": series, "auc": area, "x_min": float(g["x"].min()),
                     "x_max": float(g["x"].max()), "points": len(g),
                     "mean_y": area / span if span > 0 else float(ys.mean())})
    return pd.DataFrame(rows, columns=["series", "auc", "x_min", "x_max", "points", "mean_y"])


def baseline_level(frame: pd.DataFrame, y: str = "accuracy") -> float | None:
    """The dense baseline's accuracy: its own runs' mean, else the mean logged baseline."""
    dense = frame[frame["role"].eq(DENSE)]
    if len(dense) and y in dense:
        return float(dense[y].mean())
    if "ref_accuracy" in frame and frame["ref_accuracy"].notna().any():
        return float(frame["ref_accuracy"].mean())
    return None
