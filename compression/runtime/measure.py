"""Accuracy and latency of a runtime's model, measured IN the runtime: the same test split and
the same interleaved timing (compression.measure.latency_side_by_side) as the eager figures, so
the two sit side by side. A `Predict` takes an fp32 batch as a numpy array (converted before the
clock starts) and returns the logits."""

from __future__ import annotations

from collections.abc import Callable

from compression.core.lazy import np, torch
from compression.measure import MeasureConfig, protocol

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
    return np.ascontiguousarray(protocol.first_samples(x, batch).numpy())


def side_by_side(base: dict[int, Predict], final: dict[int, Predict], x: torch.Tensor,
                 m: MeasureConfig) -> dict[str, float]:
    """The runtime's fp32 baseline and final model timed interleaved at batch 1 and
    `m.batch_size` (warm-up and repeats as the eager timing). `base`/`final` map a batch size
    to the predict that runs it (runtimes with static shapes build one program per size)."""
    def pairs(batch: int) -> dict[str, tuple[Predict, np.ndarray]]:
        xb = tiled(x, batch)
        return {"baseline": (base[batch], xb), "final": (final[batch], xb)}

    out = protocol.against_baseline(pairs, m, prefix="rt_")
    out.pop("rt_batch_latency_p90_ms")  # not in the metric contract; batch p90 stays eager's
    return out
