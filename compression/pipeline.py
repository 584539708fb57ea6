"""One compression run: baseline -> prune -> fine-tune -> quantize -> export -> reload -> evaluate
-> measure -> log -> objectives. Nothing else lives here."""

from __future__ import annotations

import contextlib
import copy
import csv
import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from compression import data as data_mod
from compression import metrics as M
from compression import tracking
from compression.baseline import Baseline, get_baseline
from compression.config import RunConfig
from compression.export import (
    itemize,
    load_artifact,
    save_artifact,
    state_bytes,
    state_dict_bytes,
)
from compression.models import build_model, check_fits
from compression.pruning import PRUNERS, MaskSet
from compression.pruning import check as check_pruning
from compression.pruning.sparse_kernel import check_swappable, to_sparse_kernels
from compression.quantization import QUANTIZERS
from compression.training import evaluate, load_optimizer_machinery, train

log = logging.getLogger(__name__)


@dataclass
class Session:
    """What methods may use besides the model; also collects timings."""

    rc: RunConfig
    data: data_mod.Splits
    timings: dict[str, float] = field(default_factory=dict)
    # Set by pruning, read by later stages: the masks (QAT keeps them applied), structural
    # transforms recorded in the artifact so the loader can rebuild the smaller modules, and
    # method-specific metrics (e.g. channels removed) merged into the run's metrics.
    masks: MaskSet = field(default_factory=MaskSet)
    transforms: list[dict[str, Any]] = field(default_factory=list)
    extra_metrics: dict[str, float] = field(default_factory=dict)
    # Per-layer figures a stage records (e.g. quantization error), written to the layer CSV.
    layer_extra: dict[str, dict[str, float]] = field(default_factory=dict)

    def finetune(self, model: nn.Module, masks: MaskSet | None = None, epochs: int | None = None,
                 lr: float | None = None) -> None:
        """Fine-tune with `masks` (default: the session's) reapplied after every step."""
        masks = self.masks if masks is None else masks
        epochs = self.rc.finetune.epochs if epochs is None else epochs
        if epochs <= 0:
            return
        load_optimizer_machinery()
        t0 = time.perf_counter()
        train(model, self.data, self.rc.train, epochs=epochs, lr=lr or self.rc.finetune.lr,
              seed=self.rc.seed + 1, after_step=masks.after_step(model), desc="finetune")
        self.timings["finetune_seconds"] = (
            self.timings.get("finetune_seconds", 0.0) + time.perf_counter() - t0
        )

    def calibration_batches(self, n: int) -> list[torch.Tensor]:
        bs = self.rc.train.batch_size
        return [self.data.train_x[i * bs : (i + 1) * bs] for i in range(n)
                if i * bs < len(self.data.train_x)]


@contextlib.contextmanager
def _threads(n: int) -> Iterator[None]:
    """Fix torch's thread count for this job and restore it after (jobs may share a process)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def check(cfg: DictConfig | dict[str, Any]) -> tuple[RunConfig, data_mod.Splits]:
    """Everything that can be refused without training, in one-line ConfigErrors (or
    DatasetNotFoundError): every value, the dataset's presence, and whether the pruning method
    and quantization mode can handle the model. Returns the config and the data splits."""
    rc = RunConfig.from_cfg(cfg)  # every value checked before any work
    splits = data_mod.load(rc.data)  # a missing dataset fails here, before a run is opened
    # An unsupported quantization mode / layer combination fails here too, before training, and
    # so does a pruning method that cannot handle the model (e.g. structured on an untraceable
    # op). Both checks only inspect the fresh model, so one instance serves them.
    fresh = build_model(rc.model, splits.spec)
    check_fits(fresh, splits.spec, rc.model)
    QUANTIZERS.get(rc.quantization.mode).handler.check(fresh, rc.quantization)
    check_pruning(fresh, rc.pruning, splits.spec.example_input(1))
    if rc.pruning.sparse_kernel:
        check_swappable(fresh, rc.pruning, splits.spec.example_input(1))
    return rc, splits


def run(cfg: DictConfig | dict[str, Any]) -> float | tuple[float, ...]:
    """Validate, then execute one run, tracked in MLflow when enabled; returns the objectives."""
    M.retain_freed_memory()  # from the start, so every trial of a process trains alike too
    rc, splits = check(cfg)
    with _threads(rc.threads):
        if not rc.tracking.enabled:
            results = execute(rc, splits, None)
        else:
            mlrun = tracking.start_run(rc.tracking, run_name=default_run_name(rc))
            with tracking.run_status(mlrun):
                results = execute(rc, splits, mlrun)
    values = tuple(float(results[name]) for name in rc.objectives)
    return values[0] if len(values) == 1 else values


def default_run_name(rc: RunConfig) -> str:
    """A readable name for the MLflow UI, e.g. `mlp-digits-unstructured0.9-dynamic_int8`."""
    if rc.tracking.run_name:
        return rc.tracking.run_name
    width = "" if rc.model.width == 1 else f"x{rc.model.width:g}"
    p = rc.pruning
    prune = "dense" if p.method == "none" else f"{p.method}{p.sparsity:g}"
    return f"{rc.model.name}{width}-{rc.data.name}-{prune}-{rc.quantization.mode}"


def execute(rc: RunConfig, splits: data_mod.Splits, mlrun: tracking.Run | None) -> dict[str, float]:
    t_start = time.perf_counter()
    session = Session(rc, splits)
    if mlrun is not None:
        mlrun.log_params(tracking.flatten(rc.params()))
        mlrun.set_tags({"threads": rc.latency_threads, "train_threads": rc.threads})

    baseline = get_baseline(rc.model, rc.data, rc.train, rc.seed, splits, rc.paths.cache_dir)
    torch.manual_seed(rc.seed)  # pruning / fine-tuning randomness independent of cache state
    model = copy.deepcopy(baseline.model)
    session.masks = PRUNERS.get(rc.pruning.method).handler(model, rc.pruning, session)
    model.eval()
    pruned_fp32 = model  # FLOPs are counted on this fp32 graph (quantization keeps op counts)
    dead = M.dead_output_rows(model)
    if dead is not None:
        session.extra_metrics["dead_output_rows"] = float(dead[1])
        if dead[1]:
            log.warning("%s: %d of %d output rows are all zero after pruning; their classes "
                        "rest on the bias alone (keep the classifier dense: pruning.exclude=[%s]"
                        " or pruning.keep_first_last=true)", *dead, dead[0])
    if rc.pruning.sparse_kernel:  # a copy: FLOPs are still counted on the dense-kernel graph
        model = to_sparse_kernels(copy.deepcopy(model), rc.pruning, session)

    t0 = time.perf_counter()
    quantizer = QUANTIZERS.get(rc.quantization.mode).handler
    quantized = quantizer.quantize(model, rc.quantization, session)
    session.timings["quantize_seconds"] = time.perf_counter() - t0
    engine = getattr(rc.quantization, "engine", None)
    if getattr(rc.quantization, "backend", "torch_ao") != "torch_ao":
        engine = None  # torchao picks its own kernels: no engine to name
    if mlrun is not None and engine is not None:  # `auto` is resolved by now: show the pick
        mlrun.set_tags({"quantization_engine": engine})

    # Untracked runs get a unique folder too: jobs of a multirun can start within one second.
    local_id = f"local-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
    out_dir = rc.paths.artifacts_dir / (mlrun.id if mlrun else local_id)
    artifact = out_dir / "model.safetensors"
    stored = save_artifact(quantized, artifact, model_cfg=rc.model, spec=splits.spec,
                           quant_cfg=rc.quantization, transforms=session.transforms,
                           export=rc.export)
    dense_file = out_dir / "dense_fp32.safetensors"
    save_artifact(baseline.model, dense_file, model_cfg=rc.model, spec=splits.spec,
                  quant_cfg=QUANTIZERS.build_config({"mode": "none"}), sparse=False)
    final, _ = load_artifact(artifact, rc.model)  # everything below measures the reloaded artifact

    t0 = time.perf_counter()
    results, rows = measure(rc, splits, baseline, pruned_fp32, final, quantizer.cast_input)
    for row in rows:
        row.extra.update(session.layer_extra.get(row.name, {}))
    results["size_bytes"] = artifact.stat().st_size
    results["dense_size_bytes"] = dense_file.stat().st_size
    results["compression_ratio"] = results["dense_size_bytes"] / results["size_bytes"]
    results.update(itemize(artifact))  # payload_bytes + header_bytes = size_bytes
    results["state_dict_bytes"] = state_dict_bytes(baseline.model)  # torch.save, for reference
    dense_file.unlink()
    session.timings["measure_seconds"] = time.perf_counter() - t0
    results.update(session.timings)
    results.update(session.extra_metrics)
    results["baseline_train_seconds"] = baseline.train_seconds
    results["baseline_cache_hit"] = float(baseline.cache_hit)
    results["threads"] = float(rc.latency_threads)
    results["train_threads"] = float(rc.threads)
    results["peak_rss_mb"] = M.peak_rss_mb()
    results["total_seconds"] = time.perf_counter() - t_start

    layers_csv = write_layer_csv(out_dir / "layers.csv", rows, stored)
    if mlrun is not None:
        log_run(mlrun, rc, results, out_dir, artifact, layers_csv, baseline)
    log.info(summary_line(rc, results))
    return results


def measure(
    rc: RunConfig,
    splits: data_mod.Splits,
    baseline: Baseline,
    pruned_fp32: nn.Module,
    final: nn.Module,
    cast: Any,
) -> tuple[dict[str, float], list[M.LayerStats]]:
    r: dict[str, float] = {}
    r["accuracy"] = evaluate(final, splits.test_x, splits.test_y, cast=cast)
    r["val_accuracy"] = evaluate(final, splits.val_x, splits.val_y, cast=cast)
    r["baseline_accuracy"] = baseline.accuracy
    r["baseline_val_accuracy"] = baseline.val_accuracy
    r["accuracy_drop"] = r["baseline_accuracy"] - r["accuracy"]
    # what a sweep may constrain on without ever tuning against the test set
    r["val_accuracy_drop"] = r["baseline_val_accuracy"] - r["val_accuracy"]

    rows = M.layer_stats(final)
    r["sparsity"] = M.sparsity(rows)
    r["params"] = sum(x.params for x in rows)
    r["nonzero_params"] = sum(x.nonzero_params for x in rows)
    example = splits.spec.example_input(1)
    base_flops, _ = M.flops_per_layer(baseline.model, example)
    flops, per_layer = M.flops_per_layer(pruned_fp32, example)
    for row in rows:
        row.extra["flops"] = per_layer.get(row.name, 0)
    r["flops"] = flops
    r["effective_flops"] = M.effective_flops(flops, per_layer, rows)
    r["theoretical_speedup"] = base_flops / max(1, r["effective_flops"])
    r["model_bytes"] = state_bytes(final)

    if rc.measure.latency:
        with _threads(rc.latency_threads):
            r.update(measure_latency(rc, splits, baseline.model, final, cast))
    return r, rows


def measure_latency(
    rc: RunConfig, splits: data_mod.Splits, base: nn.Module, final: nn.Module, cast: Any
) -> dict[str, float]:
    """Baseline and final model timed back to back, interleaved, in this process."""
    m = rc.measure
    out: dict[str, float] = {}
    # Batch N: a call does the work of many batch-1 calls, so fewer calls suffice (each one is
    # already warm after the first two: buffers allocated, kernels' primitives cached).
    for label, batch, warmup, repeats in (
        ("", 1, m.warmup, m.repeats),
        ("batch_", m.batch_size, min(m.warmup, max(2, m.warmup // 5)), max(10, m.repeats // 5)),
    ):
        x = splits.test_x[:batch]
        if len(x) < batch:  # small test sets: tile to the requested batch
            x = x.repeat((batch + len(x) - 1) // len(x), 1, 1, 1)[:batch]
        lat = M.latency_side_by_side(
            {"baseline": (base, x), "final": (final, cast(x))}, warmup, repeats
        )
        out[f"{label}latency_ms"] = lat["final"].median_ms
        out[f"{label}latency_p90_ms"] = lat["final"].p90_ms
        out[f"baseline_{label}latency_ms"] = lat["baseline"].median_ms
        out[f"{label}speedup"] = lat["baseline"].median_ms / lat["final"].median_ms
    out["throughput"] = m.batch_size / (out["batch_latency_ms"] / 1000)
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
                    "quant_mse"])
        for r in rows:
            w.writerow([r.name, r.type, r.params, r.weight_numel, r.weight_zeros,
                        f"{r.weight_zeros / max(1, r.weight_numel):.6f}", r.nonzero_params,
                        r.bytes, artifact_bytes(r.name), int(r.extra.get("flops", 0)),
                        # blank when the layer was not quantized
                        r.extra.get("quant_sqnr_db", ""), r.extra.get("quant_mse", "")])
    return path


def log_run(
    mlrun: tracking.Run,
    rc: RunConfig,
    results: dict[str, float],
    out_dir: Path,
    artifact: Path,
    layers_csv: Path,
    baseline: Baseline,
) -> None:
    mlrun.log_metrics(results)
    mlrun.set_tags({"baseline_cache": "hit" if baseline.cache_hit else "miss",
                    "baseline_path": str(baseline.path)})
    config_file = out_dir / "config.yaml"
    config_file.write_text(OmegaConf.to_yaml(OmegaConf.create(rc.params())))
    mlrun.log_artifact(config_file)
    mlrun.log_artifact(layers_csv)
    if rc.tracking.log_model:
        mlrun.log_artifact(artifact, "model")


def summary_line(rc: RunConfig, r: dict[str, float]) -> str:
    lat = (f" latency {r['latency_ms']:.3f}ms (speedup {r['speedup']:.2f}x, "
           f"batch {r['batch_speedup']:.2f}x)" if "latency_ms" in r else "")
    q = rc.quantization
    bits = getattr(q, "bits", None) if q.mode in ("lowbit", "kmeans") else None
    quant = q.mode + (f"/{bits}" if bits is not None else "")  # lowbit/4, lowbit/ternary
    return (
        f"{rc.model.name}/{rc.data.name} pruning={rc.pruning.method}@{rc.pruning.sparsity:.4g} "
        f"quant={quant}: acc {r['accuracy']:.4f} "
        f"(baseline {r['baseline_accuracy']:.4f}, val {r['val_accuracy']:.4f}) "
        f"sparsity {r['sparsity']:.3f} size {int(r['size_bytes'])}B "
        f"(dense {int(r['dense_size_bytes'])}B, {r['compression_ratio']:.2f}x){lat} "
        f"in {r['total_seconds']:.1f}s"
    )
