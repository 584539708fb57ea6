"""Measurements: sparsity and parameter counts from actual zeros, FLOPs, memory and latency."""

from __future__ import annotations

import ctypes
import functools
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils._python_dispatch import is_traceable_wrapper_subclass
from torch.utils.flop_counter import FlopCounterMode

from compression import validation as v
from compression.models import prunable_layers

PRUNABLE_TYPES = (
    "Linear", "Conv1d", "Conv2d", "Conv3d",
    # the same layers after quantization: fused with their ReLU (torch.ao), packed low-bit
    "LinearReLU", "ConvReLU1d", "ConvReLU2d", "ConvReLU3d", "LowBitLinear", "LowBitConv2d",
    "SparseLinear",  # a Linear run by a CSR kernel (pruning.sparse_kernel)
    "SharedLinear", "SharedConv2d",  # k-means shared weights (quantization=kmeans)
)


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
def _tensor(value: object) -> torch.Tensor | None:
    """A module's weight/bias as a float tensor, whether a Parameter or a quantized accessor."""
    if callable(value) and not isinstance(value, torch.Tensor):
        value = value()  # quantized modules expose weight() / bias() methods
    if not isinstance(value, torch.Tensor):
        return None
    if value.is_quantized or is_traceable_wrapper_subclass(value):  # torch.ao / torchao int8
        return value.dequantize()
    return value.detach()


def dense_weight(module: nn.Module) -> torch.Tensor | None:
    """A module's weight as a plain float tensor, whatever holds it (a Parameter, torch.ao's
    weight() method, a torchao tensor subclass, a SparseLinear's CSR form); None without one."""
    w = _tensor(getattr(module, "weight", None))
    return None if w is None else w.float()


@dataclass
class LayerStats:
    name: str
    type: str
    params: int  # weight + bias elements
    weight_numel: int
    weight_zeros: int  # exact zeros in the weight (what pruning produces)
    nonzero_params: int
    bytes: int  # in-memory bytes of the layer's weight and bias at their storage width
    extra: dict[str, float] = field(default_factory=dict)  # e.g. artifact bytes, quant error

    @property
    def prunable(self) -> bool:
        return self.type in PRUNABLE_TYPES


def _storage_bytes(value: object) -> int:
    if callable(value) and not isinstance(value, torch.Tensor):
        value = value()
    if is_traceable_wrapper_subclass(value):  # torchao: int8 data + scales, not the fp32 view
        names, _ = value.__tensor_flatten__()
        return sum(_storage_bytes(getattr(value, n)) for n in names)
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    return 0


def _layer_bytes(m: nn.Module) -> int:
    """Bytes the layer's weights take in memory. A layer whose weight is computed on the fly
    from tensors of its own (packed low-bit codes and scales) counts those tensors, not the
    fp32 weight it computes; torch.ao's quantized layers keep theirs in packed params and
    report the int8 weight itself."""
    weight = getattr(m, "weight", None)
    own = [*m.parameters(recurse=False), *m.buffers(recurse=False)]
    if callable(weight) and not isinstance(weight, torch.Tensor) and own:
        return sum(_storage_bytes(t) for t in own)
    return _storage_bytes(weight) + _storage_bytes(getattr(m, "bias", None))


def layer_stats(model: nn.Module) -> list[LayerStats]:
    """One row per module that owns a weight (Linear, Conv, BatchNorm, their quantized forms)."""
    rows = []
    for name, m in model.named_modules():
        w = _tensor(getattr(m, "weight", None))
        if w is None:
            continue
        b = _tensor(getattr(m, "bias", None))
        zeros = int((w == 0).sum())
        b_nz = int((b != 0).sum()) if b is not None else 0
        rows.append(
            LayerStats(
                name=name,
                type=type(m).__name__,
                params=w.numel() + (b.numel() if b is not None else 0),
                weight_numel=w.numel(),
                weight_zeros=zeros,
                nonzero_params=w.numel() - zeros + b_nz,
                bytes=_layer_bytes(m),
            )
        )
    return rows


def dead_output_rows(model: nn.Module) -> tuple[str, int, int] | None:
    """(name, all-zero weight rows, rows) of the model's last Linear/Conv layer (registration
    order: the classifier of the built-in models). A pruned-away row of the classifier leaves
    its class to the bias alone; gradient criteria can do that to a converged model."""
    layers = prunable_layers(model)
    if not layers:
        return None
    name, layer = next(reversed(layers.items()))
    w = layer.weight.detach()
    return name, int((w.reshape(w.shape[0], -1) == 0).all(1).sum()), w.shape[0]


def sparsity(rows: list[LayerStats]) -> float:
    """Fraction of exact zeros among prunable (Linear/Conv) weights."""
    total = sum(r.weight_numel for r in rows if r.prunable)
    return sum(r.weight_zeros for r in rows if r.prunable) / max(1, total)


# ---------------------------------------------------------------------------- FLOPs
def flops_per_layer(model: nn.Module, example: torch.Tensor) -> tuple[int, dict[str, int]]:
    """Forward FLOPs for one sample (total, and per prunable layer) via torch's FLOP counter,
    which counts matmuls and convolutions (2 FLOPs per multiply-accumulate)."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(example)
    root = type(model).__name__
    counts = counter.get_flop_counts()
    per_layer = {}
    for name in prunable_layers(model):
        per_layer[name] = int(sum(counts.get(f"{root}.{name}", {}).values()))
    return int(counter.get_total_flops()), per_layer


def effective_flops(total: int, per_layer: dict[str, int], rows: list[LayerStats]) -> int:
    """FLOPs if multiplications by zero weights were skipped: each layer scaled by its density."""
    by_name = {r.name: r for r in rows}
    saved = 0.0
    for name, f in per_layer.items():
        r = by_name.get(name)
        if r is not None and r.weight_numel:
            saved += f * r.weight_zeros / r.weight_numel
    return round(total - saved)


# ---------------------------------------------------------------------------- time and memory
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


@torch.inference_mode()
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


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
