"""Latency: several models timed interleaved on their inputs after a warm-up (median and
p90 of single calls), with freed memory kept for reuse so no call pays page faults."""

from __future__ import annotations

import ctypes
import functools
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

from compression.core.lazy import inference_mode, torch


@dataclass
class Latency:
    median_ms: float
    p90_ms: float
    samples: int


def _percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    k = (len(xs) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h


@functools.cache
def retain_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse instead of handing it back to the OS.

    By default glibc serves each allocation above 128 KiB (up to 32 MiB, adaptively) with a
    fresh mmap and unmaps it on free, so every call of a model at batch 256 page-faults its
    activation buffers in again. Measured on the residual CNN at batch 256: that was half of the
    dense model's time and a smaller share of the pruned model's (smaller buffers), so speed-ups
    looked larger than the kernels give. jemalloc and tcmalloc, which PyTorch recommends for CPU
    inference, reuse freed memory like this by default. Takes effect once per process (at the
    start of a run, so every trial trains alike, and before any timing); memory then stays at
    its peak instead of shrinking back. False where the C library is not glibc (timings then
    include whatever that allocator does)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        # glibc before 2.26 caps the threshold at 32 MiB: enough for these models' buffers
        mmap = libc.mallopt(M_MMAP_THRESHOLD, 1 << 30) or libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)
        return bool(mmap and libc.mallopt(M_TRIM_THRESHOLD, (1 << 31) - 1))
    except (OSError, AttributeError):
        return False


@inference_mode
def latency_side_by_side(
    candidates: dict[str, tuple[Callable[[torch.Tensor], object], torch.Tensor]],
    warmup: int,
    repeats: int,
    clock: Callable[[], int] = time.perf_counter_ns,
) -> dict[str, Latency]:
    """Time several models on their inputs, interleaving calls so that drift (frequency scaling,
    other processes) hits all of them alike. Each sample is one call, timed by `clock` (ns; e.g.
    time.thread_time_ns for CPU time on a shared machine); returns median and p90. Freed memory
    is reused rather than page-faulted in again on every call (retain_freed_memory)."""
    retain_freed_memory()
    for fn, x in candidates.values():
        for _ in range(warmup):
            fn(x)
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, (fn, x) in candidates.items():
            t0 = clock()
            fn(x)
            samples[name].append((clock() - t0) / 1e6)
    return {
        name: Latency(statistics.median(s), _percentile(s, 0.9), len(s))
        for name, s in samples.items()
    }
