"""Accuracy and latency of a runtime's model, measured IN the runtime: the same test split and
the same interleaved timing (compression.measure.latency_side_by_side) as the eager figures, so
the two sit side by side. A `Predict` takes an fp32 batch as a numpy array (converted before the
clock starts) and returns the logits."""

from __future__ import annotations

from collections.abc import Callable

from compression import measure as M
from compression.core.lazy import np, torch
from compression.measure import MeasureConfig

Predict = Callable[["np.ndarray"], "np.ndarray"]


def accuracy(predict: Predict, x: torch.Tensor, y: torch.Tensor, batch: int = 512) -> float:
    """Top-1 of `predict` over (x, y) in batches of `batch`."""
    correct = 0
    for i in range(0, len(x), batch):
        logits = np.asarray(predict(x[i : i + batch].numpy()))
        correct += int((logits.argmax(axis=1) == y[i : i + batch].numpy()).sum())
    return correct / max(1, y.numel())  # sequence labels (N, T): every position counts


def tiled(x: torch.Tensor, batch: int) -> np.ndarray:
    """The first `batch` samples of x, tiled when the split is smaller (as the eager timing)."""
    if len(x) < batch:
        x = x.repeat((batch + len(x) - 1) // len(x), *([1] * (x.dim() - 1)))
    return np.ascontiguousarray(x[:batch].numpy())


def side_by_side(base: dict[int, Predict], final: dict[int, Predict], x: torch.Tensor,
                 m: MeasureConfig) -> dict[str, float]:
    """The runtime's fp32 baseline and final model timed interleaved at batch 1 and
    `m.batch_size` (warm-up and repeats as the eager timing). `base`/`final` map a batch size
    to the predict that runs it (runtimes with static shapes build one program per size)."""
    out: dict[str, float] = {}
    for label, batch, warmup, repeats in (
        ("", 1, m.warmup, m.repeats),
        ("batch_", m.batch_size, min(m.warmup, max(2, m.warmup // 5)), max(10, m.repeats // 5)),
    ):
        xb = tiled(x, batch)
        lat = M.latency_side_by_side(
            {"baseline": (base[batch], xb), "final": (final[batch], xb)}, warmup, repeats)
        out[f"rt_{label}latency_ms"] = lat["final"].median_ms
        out[f"rt_{label}latency_p90_ms"] = lat["final"].p90_ms
        out[f"rt_baseline_{label}latency_ms"] = lat["baseline"].median_ms
        out[f"rt_{label}speedup"] = lat["baseline"].median_ms / lat["final"].median_ms
    out.pop("rt_batch_latency_p90_ms")  # not in the metric contract; batch p90 stays eager's
    return out
