"""What a run measures on its reloaded artifact: quality against the baseline, sparsity and
FLOPs of the pruned fp32 graph, stored bits, latency side by side with the baseline, and the
per-layer CSV; plus the all-zero channels a pruning method left."""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

from torch import nn

from compression import data as data_mod
from compression import measure as M
from compression.artifact.format import state_bytes
from compression.config.run import RunConfig
from compression.measure import protocol
from compression.run.session import Session, fixed_threads
from compression.training.baseline import Baseline
from compression.training.loop import evaluate
from compression.training.quality import named_metric, quality_loss

log = logging.getLogger(__name__)


def report_dead_channels(model: nn.Module, rc: RunConfig, session: Session) -> None:
    """All-zero weight rows per layer (CSV column `dead_rows`), the classifier's as
    `dead_output_rows` and the others' as `dead_internal_channels`, with a warning for each kind
    a method left by accident (a method that removes channels on purpose gets no warning)."""
    dead = M.dead_rows(model)
    if not dead:
        return
    for name, (n, _) in dead.items():
        session.layer_extra.setdefault(name, {})["dead_rows"] = n
    last = next(reversed(dead))
    internal = {name: d for name, d in dead.items() if name != last and d[0]}
    session.extra_metrics["dead_output_rows"] = float(dead[last][0])
    session.extra_metrics["dead_internal_channels"] = float(sum(n for n, _ in internal.values()))
    if rc.pruning.removes_channels():
        return
    if dead[last][0]:
        log.warning("%s: %d of %d output rows are all zero after pruning; their classes "
                    "rest on the bias alone (keep the classifier dense: pruning.exclude=[%s]"
                    " or pruning.keep_first_last=true)", last, *dead[last], last)
    if internal:
        where = ", ".join(f"{name} {n}/{rows}" for name, (n, rows) in internal.items())
        log.warning("pruning left %d internal channel(s) with all-zero weights (%s): each emits "
                    "its bias alone, a constant its consumers cannot use; lower those layers' "
                    "sparsity (pruning.overrides) or remove channels on purpose "
                    "(pruning=structured)", sum(n for n, _ in internal.values()), where)


def measure(
    rc: RunConfig,
    splits: data_mod.Splits,
    baseline: Baseline,
    pruned_fp32: nn.Module,
    final: nn.Module,
    cast: Any,
) -> tuple[dict[str, float], list[M.LayerStats]]:
    r: dict[str, float] = {}
    fn = None if rc.metric.is_default else rc.metric.fn()  # None: top-1, counted exactly
    r["accuracy"] = evaluate(final, splits.test_x, splits.test_y, cast=cast, metric=fn)
    r["val_accuracy"] = evaluate(final, splits.val_x, splits.val_y, cast=cast, metric=fn)
    r["baseline_accuracy"] = baseline.accuracy
    r["baseline_val_accuracy"] = baseline.val_accuracy
    # quality lost, positive when worse whatever the metric's direction (perplexity rises)
    r["accuracy_drop"] = quality_loss(r["baseline_accuracy"], r["accuracy"], rc.metric.name)
    # what a sweep may constrain on without ever tuning against the test set
    r["val_accuracy_drop"] = quality_loss(r["baseline_val_accuracy"], r["val_accuracy"],
                                          rc.metric.name)
    # relative to the baseline (what INC / NNCF tolerances mean): sweep=autotune's target.relative
    r["accuracy_drop_rel"] = r["accuracy_drop"] / max(r["baseline_accuracy"], 1e-12)
    r["val_accuracy_drop_rel"] = r["val_accuracy_drop"] / max(r["baseline_val_accuracy"], 1e-12)
    r.update(named_metric(rc.metric, r))

    # What pruning removed, from the pruned fp32 model; what quantization rounded to zero on
    # top of that (e.g. ~half of 2-bit weights), from the reloaded artifact, reported apart.
    pruned = M.layer_stats(pruned_fp32)
    rows = M.layer_stats(final)
    r["sparsity"] = M.sparsity(pruned)
    r["params"] = sum(x.params for x in pruned)
    r["nonzero_params"] = sum(x.nonzero_params for x in pruned)
    r["quant_zero_fraction"] = M.sparsity(rows)
    example = splits.spec.example_input(1)
    base_flops, _ = M.flops_per_layer(baseline.model, example)
    flops, per_layer = M.flops_per_layer(pruned_fp32, example)
    by_name = {x.name: x for x in pruned}
    for row in rows:
        row.extra["flops"] = per_layer.get(row.name, 0)
        row.extra["quant_weight_zeros"] = row.weight_zeros
        p = by_name.get(row.name)
        if p is not None and p.weight_numel == row.weight_numel:  # the CSV's pruning columns
            row.weight_zeros, row.nonzero_params = p.weight_zeros, p.nonzero_params
    r["flops"] = flops
    r["effective_flops"] = M.effective_flops(flops, per_layer, pruned)
    r["theoretical_speedup"] = base_flops / max(1, r["effective_flops"])
    r["model_bytes"] = state_bytes(final)
    # stored bits per weight, read off the reloaded artifact's layers (packed widths, dtypes)
    average_bits, layer_bits = M.weight_bits(final)
    for row in rows:
        if layer_bits.get(row.name) is not None:
            row.extra["bits"] = layer_bits[row.name]
    if average_bits is not None:
        r["weight_bits"] = average_bits

    if rc.measure.latency:
        with fixed_threads(rc.latency_threads):
            r.update(measure_latency(rc, splits, baseline.model, final, cast))
    return r, rows


def measure_latency(
    rc: RunConfig, splits: data_mod.Splits, base: nn.Module, final: nn.Module, cast: Any
) -> dict[str, float]:
    """Baseline and final model timed back to back, interleaved, in this process."""
    def pairs(batch: int) -> dict[str, tuple[Any, Any]]:
        x = protocol.first_samples(splits.test_x, batch)
        return {"baseline": (base, x), "final": (final, cast(x))}

    out = protocol.against_baseline(pairs, rc.measure)
    out["throughput"] = rc.measure.batch_size / (out["batch_latency_ms"] / 1000)
    return out


def write_layer_csv(path: Path, rows: list[M.LayerStats], stored: dict[str, int]) -> Path:
    """Per-layer params, zeros and bytes (in memory and in the artifact file)."""

    def artifact_bytes(layer: str) -> int:
        prefix = f"{layer}."
        return sum(b for key, b in stored.items() if key.startswith(prefix))

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["layer", "type", "params", "weight_numel", "weight_zeros", "sparsity",
                    "nonzero_params", "bytes", "artifact_bytes", "flops", "quant_sqnr_db",
                    "quant_mse", "quant_weight_zeros", "dead_rows", "bits"])
        for r in rows:
            w.writerow([r.name, r.type, r.params, r.weight_numel, r.weight_zeros,
                        f"{r.weight_zeros / max(1, r.weight_numel):.6f}", r.nonzero_params,
                        r.bytes, artifact_bytes(r.name), int(r.extra.get("flops", 0)),
                        # blank when the layer was not quantized / is not a Linear or Conv
                        r.extra.get("quant_sqnr_db", ""), r.extra.get("quant_mse", ""),
                        r.extra.get("quant_weight_zeros", ""), r.extra.get("dead_rows", ""),
                        r.extra.get("bits", "")])
    return path
