"""The `measure` config section: what is timed and how often (torch-free)."""

from __future__ import annotations

from dataclasses import dataclass

from compression.core import validation as v


@dataclass
class MeasureConfig:
    threads: int | None = 1  # torch threads while timing; None = as training (cores / workers)
    batch_size: int = 256  # the "batch N" of batch_latency_ms and throughput
    warmup: int = 10  # untimed calls before timing each model (batch N: max(2, warmup // 5))
    repeats: int = 100  # timed calls at batch 1 (batch N uses max(10, repeats // 5))
    latency: bool = True  # False skips latency (metrics then absent, not zero)

    def __post_init__(self) -> None:
        if self.threads is not None:
            v.in_range("measure.threads", self.threads, 1, None, integer=True)
        v.in_range("measure.batch_size", self.batch_size, 1, None, integer=True)
        v.in_range("measure.warmup", self.warmup, 0, None, integer=True)
        v.in_range("measure.repeats", self.repeats, 3, None, integer=True)


# ---------------------------------------------------------------------------- weights and zeros
