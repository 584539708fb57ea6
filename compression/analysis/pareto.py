"""Pareto fronts over run tables (pure data; `plots` draws them)."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from compression.core.errors import ConfigError

DIRECTIONS = {"max": -1.0, "min": 1.0}  # sign that turns each objective into one to minimize


@dataclass(frozen=True)
class Objective:
    column: str
    direction: str  # "max" or "min"
    log: bool = False  # plotted (and knee-measured) on a log axis

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ConfigError(f"objective {self.column}: direction={self.direction!r} is not "
                              f"one of {', '.join(DIRECTIONS)}")


# Two fronts: accuracy against file size and against batch-1 latency. Latency is taken relative
# to each run's own baseline timed interleaved with it (derive.relative_latency), the only
# latency figure comparable across runs timed at different moments.
FRONTS: dict[str, tuple[Objective, Objective]] = {
    "size": (Objective("size_bytes", "min", log=True), Objective("accuracy", "max")),
    "latency": (Objective("relative_latency", "min", log=True), Objective("accuracy", "max")),
    # runs with runtime=onnxruntime|executorch: accuracy and latency measured in the runtime
    "rt_latency": (Objective("rt_latency_ms", "min", log=True), Objective("rt_accuracy", "max")),
}


QUALITY_COLUMNS = ("accuracy", "val_accuracy")  # the metric's slots (rt_accuracy is top-1)


def oriented(objectives: Sequence[Objective], direction: str) -> tuple[Objective, ...]:
    """`objectives` with the quality columns' direction set to `direction` ("min" for runs whose
    metric is lower-is-better, such as perplexity; quality.direction_of)."""
    return tuple(replace(o, direction=direction) if o.column in QUALITY_COLUMNS else o
                 for o in objectives)


def pareto_mask(frame: pd.DataFrame, objectives: Sequence[Objective]) -> pd.Series:
    """True for rows no other row dominates (at least as good in every objective and strictly
    better in one). Exact ties are all kept; rows missing an objective are never on the front."""
    cols = [o.column for o in objectives]
    values = frame[cols].to_numpy(dtype=float) * [DIRECTIONS[o.direction] for o in objectives]
    valid = ~np.isnan(values).any(axis=1)
    v = values[valid]
    on_front = np.ones(len(v), dtype=bool)
    for i in range(len(v)):  # O(n^2) but vectorised per row: thousands of runs in well under 1 s
        no_worse = (v <= v[i]).all(axis=1)
        better = (v < v[i]).any(axis=1)
        on_front[i] = not (no_worse & better).any()
    mask = np.zeros(len(frame), dtype=bool)
    mask[np.flatnonzero(valid)[on_front]] = True
    return pd.Series(mask, index=frame.index, name="pareto")


def knee_index(front: pd.DataFrame, objectives: Sequence[Objective]) -> Hashable | None:
    """The front's knee: the point farthest from the straight line joining its two ends, with
    both axes scaled to [0, 1] (log axes in log space). None for fewer than three points or a
    straight front, where no point stands out."""
    x_obj, y_obj = objectives
    pts = front[[x_obj.column, y_obj.column]].dropna().drop_duplicates()
    if len(pts) < 3:
        return None
    xy = pts.to_numpy(dtype=float)
    for k, obj in enumerate((x_obj, y_obj)):
        if obj.log:
            xy[:, k] = np.log10(xy[:, k])
        span = np.ptp(xy[:, k])
        xy[:, k] = (xy[:, k] - xy[:, k].min()) / (span if span > 0 else 1.0)
    order = np.argsort(xy[:, 0], kind="stable")
    xy, labels = xy[order], pts.index[order]
    a, b = xy[0], xy[-1]
    chord = (b - a) / max(np.linalg.norm(b - a), 1e-12)
    rel = xy - a
    dist = np.abs(rel[:, 0] * chord[1] - rel[:, 1] * chord[0])  # |2-D cross product|
    best = int(np.argmax(dist))
    return None if dist[best] < 1e-9 else labels[best]
