"""Runtime as an analysis dimension: the sweet spot by rt_latency ranks runs by their speed-up
over the runtime's own fp32 (timed interleaved), not by raw milliseconds; the front and the
eager-vs-runtime table read the rt_* columns."""

from __future__ import annotations

import pandas as pd

from compression.analysis import runtimes
from compression.analysis.pareto import FRONTS, pareto_mask
from compression.analysis.sweet_spot import sweet_spot


def _frame() -> pd.DataFrame:
    # b is faster in raw ms only because it was timed while the machine was quieter: its
    # interleaved speed-up over ORT fp32 is lower than c's. d is fastest but too inaccurate.
    return runtimes.add_columns(pd.DataFrame({
        "run_id": ["a", "b", "c", "d"], "label": ["fp32", "int8 lenet5", "structured", "bad"],
        "accuracy": [0.95, 0.95, 0.948, 0.80], "val_accuracy_drop": [0.0, 0.0, 0.002, 0.15],
        "accuracy_drop": [0.0, 0.0, 0.002, 0.15],
        "rt_accuracy": [0.95, 0.951, 0.947, 0.79], "rt_latency_ms": [0.30, 0.12, 0.20, 0.05],
        "rt_speedup": [1.0, 0.6, 1.5, 4.0], "rt_batch_speedup": [1.0, 0.5, 2.0, 5.0],
        "latency_ms": [1.0, 1.1, 0.8, 0.5], "speedup": [1.0, 0.9, 1.25, 2.0],
        "batch_latency_ms": [10, 11, 8, 5], "rt_batch_latency_ms": [3, 4, 2, 1],
        "batch_speedup": [1, 0.9, 1.25, 2], "size_bytes": [4, 1, 2, 1],
        "rt_size_bytes": [4, 1.1, 2, 1],
    }))


def test_sweet_spot_by_rt_latency_ranks_by_the_interleaved_speedup() -> None:
    spot = sweet_spot(_frame(), tolerance=0.01, by="rt_latency")
    assert spot.best["run_id"] == "c"  # 1.5x over fp32; b's 0.12 ms is the slower model
    assert spot.best["rt_speedup"] == 1.5 and spot.candidates == 3


def test_rt_front_and_side_by_side_table() -> None:
    frame = _frame()
    mask = pareto_mask(frame, FRONTS["rt_latency"])
    assert list(frame["run_id"][mask]) == ["b", "d"]  # by raw rt ms and rt accuracy
    table = runtimes.side_by_side(frame)
    assert list(table.columns[:2]) == ["run_id", "label"]
    assert {"eager_speedup", "rt_speedup", "eager_accuracy", "rt_accuracy"} <= set(table)
    assert runtimes.has_runtime(frame)
    assert not runtimes.has_runtime(frame.drop(columns=[c for c in frame if "rt_" in c]))
