"""Measurements: sparsity and parameter counts from actual zeros, FLOPs, memory and latency.

config (the `measure` section), stats (counts from the model), timing (interleaved latency),
protocol (the one latency protocol of every reported figure), memory (peak RSS)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from compression.core.lazy import lazy_exports
from compression.measure.config import MeasureConfig
from compression.measure.memory import peak_rss_mb, peak_rss_resettable, reset_peak_rss

# Checking a config needs only the section and peak_rss_resettable; the rest loads when used
__getattr__ = lazy_exports(__name__, ["stats", "timing"])

if TYPE_CHECKING:
    from compression.measure.stats import (
        PRUNABLE_TYPES,
        STAND_INS,
        LayerStats,
        dead_rows,
        dense_weight,
        effective_flops,
        flops_per_layer,
        layer_stats,
        prunable_classes,
        prunable_type_names,
        sparsity,
        stands_in_for_prunable,
        stored_weight_bits,
        weight_bits,
    )
    from compression.measure.timing import Latency, latency_side_by_side, retain_freed_memory

__all__ = [
    "PRUNABLE_TYPES", "STAND_INS", "Latency", "LayerStats",
    "MeasureConfig", "dead_rows", "dense_weight", "effective_flops", "flops_per_layer",
    "latency_side_by_side", "layer_stats", "peak_rss_mb", "peak_rss_resettable",
    "prunable_classes", "prunable_type_names", "reset_peak_rss", "retain_freed_memory",
    "sparsity", "stands_in_for_prunable", "stored_weight_bits", "weight_bits",
]
