"""Timed choice among interchangeable implementations (`engine=auto` of the int8 modes,
`kernel=auto` of lowbit), as cudnn.benchmark picks convolution algorithms: measured on the
CPU at hand, never assumed."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from compression.core.lazy import torch


def time_candidates(fns: dict[str, Callable[[torch.Tensor], object]],
                    batches: list[torch.Tensor], budget_s: float,
                    clock: Callable[[], int] = time.perf_counter_ns) -> dict[str, float]:
    """Score of each candidate: the geometric mean over `batches` (e.g. batch 1 and a
    calibration batch) of its median latency in ms. Calls are interleaved so machine drift hits
    all alike; each batch gets as many rounds as fit its share of `budget_s` (5 to 200).
    `clock` (ns): wall time by default; time.thread_time_ns counts only this thread's CPU time,
    which other processes on a loaded machine cannot inflate (right for one torch thread)."""
    from compression.measure import latency_side_by_side  # metrics imports quantization

    logs = {name: 0.0 for name in fns}
    for x in batches:
        with torch.inference_mode():
            t0 = time.perf_counter()
            for f in fns.values():
                f(x)
            round_s = time.perf_counter() - t0
            rounds = min(200, max(5, int(budget_s / len(batches) / max(round_s, 1e-9))))
            lat = latency_side_by_side({name: (f, x) for name, f in fns.items()}, 1, rounds,
                                       clock)
        for name, r in lat.items():
            logs[name] += math.log(max(r.median_ms, 1e-9)) / len(batches)
    return {name: math.exp(v) for name, v in logs.items()}
