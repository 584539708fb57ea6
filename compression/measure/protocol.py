"""The one latency protocol of every figure the project reports, eager or in a runtime: batch 1
(`measure.warmup` + `measure.repeats` calls) and batch `measure.batch_size` (fewer calls: each
does the work of many batch-1 calls and is warm after the first two), each timed interleaved
with the baseline (latency_side_by_side), median and p90, on the first samples of the test split
(tiled when the split is smaller than the batch)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from compression.measure import MeasureConfig

# (metric infix, batch size, warm-up calls, timed calls) for a measure config
Step = tuple[str, int, int, int]
# batch size -> {"baseline": (fn, input), "final": (fn, input)}
Pairs = Callable[[int], dict[str, tuple[Callable[[Any], object], Any]]]


def steps(m: MeasureConfig) -> list[Step]:
    return [("", 1, m.warmup, m.repeats),
            ("batch_", m.batch_size, min(m.warmup, max(2, m.warmup // 5)),
             max(10, m.repeats // 5))]


def first_samples(x: torch.Tensor, batch: int) -> torch.Tensor:
    """The first `batch` samples of x, tiled when the split is smaller."""
    if len(x) < batch:
        x = x.repeat((batch + len(x) - 1) // len(x), *([1] * (x.dim() - 1)))
    return x[:batch]


def against_baseline(pairs: Pairs, m: MeasureConfig, prefix: str = "") -> dict[str, float]:
    """`<prefix>[batch_]latency_ms`, `..._p90_ms`, `<prefix>baseline_[batch_]latency_ms` and
    `<prefix>[batch_]speedup` of the final model against the baseline, by the protocol above."""
    from compression.measure import latency_side_by_side

    out: dict[str, float] = {}
    for label, batch, warmup, repeats in steps(m):
        lat = latency_side_by_side(pairs(batch), warmup, repeats)
        out[f"{prefix}{label}latency_ms"] = lat["final"].median_ms
        out[f"{prefix}{label}latency_p90_ms"] = lat["final"].p90_ms
        out[f"{prefix}baseline_{label}latency_ms"] = lat["baseline"].median_ms
        out[f"{prefix}{label}speedup"] = lat["baseline"].median_ms / lat["final"].median_ms
    return out
