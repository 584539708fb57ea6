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
from compression import measure as M
from compression import tracking
from compression.artifact.format import (
    itemize,
    load_artifact,
    save_artifact,
    state_bytes,
    state_dict_bytes,
)
from compression.config.run import RunConfig
from compression.core.errors import ConfigError
from compression.core.job import JobContext, Reporter
from compression.models import checkpoint as ckpt
from compression.models.build import build_model, check_fits, prunable_layers
from compression.pruning import PRUNERS, MaskSet, PruningConfig, layer_targets
from compression.pruning import check as check_pruning
from compression.pruning.allocation import allocated_config
from compression.pruning.base import PruneResult
from compression.pruning.sparse_kernel import check_swappable, to_sparse_kernels
from compression.quantization import QUANTIZERS, Quantized
from compression.quantization import allocation as bit_allocation
from compression.runtime import hook as runtime_hook
from compression.training.baseline import Baseline, get_baseline
from compression.training.loop import evaluate, load_optimizer_machinery, train
from compression.training.quality import named_metric, quality_loss

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
    teacher: nn.Module | None = None  # the dense baseline, for finetune.distill
    extra_params: dict[str, str] = field(default_factory=dict)  # e.g. the allocated targets
    # Per-layer allocation (sparsity and / or bits) -> the artifact allocation.csv
    allocation: dict[str, dict[str, Any]] = field(default_factory=dict)
    # A sweep's pruner: val accuracy after every fine-tuning epoch, numbered across the run's
    # fine-tuning passes (iterative rounds, QAT), so the steps of every trial line up.
    reporter: Reporter | None = None
    epochs_done: int = 0

    def finetune(self, model: nn.Module, masks: MaskSet | None = None, epochs: int | None = None,
                 lr: float | None = None) -> None:
        """Fine-tune with `masks` (default: the session's) reapplied after every step."""
        masks = self.masks if masks is None else masks
        epochs = self.rc.finetune.epochs if epochs is None else epochs
        if epochs <= 0:
            return
        load_optimizer_machinery()
        t0 = time.perf_counter()
        distillation = self.rc.finetune.teacher_loss()
        train(model, self.data, self.rc.train, epochs=epochs, lr=lr or self.rc.finetune.lr,
              seed=self.rc.seed + 1, after_step=masks.after_step(model), desc="finetune",
              teacher=self.teacher if distillation else None, distillation=distillation,
              after_epoch=self._report if self.reporter is not None else None)
        self.timings["finetune_seconds"] = (
            self.timings.get("finetune_seconds", 0.0) + time.perf_counter() - t0
        )

    def keep(self, pruned: PruneResult) -> None:
        """What the pruning method returned, for the stages after it."""
        self.masks = pruned.masks
        self.transforms += pruned.transforms
        self.extra_metrics.update(pruned.metrics)

    def _report(self, model: nn.Module) -> None:
        assert self.reporter is not None
        self.epochs_done += 1
        # the run's metric, as the study's val_accuracy objective holds it (perplexity: the
        # sweeper minimizes, so a pruner reads a falling value as progress)
        fn = None if self.rc.metric.is_default else self.rc.metric.fn()
        self.reporter.report(evaluate(model, self.data.val_x, self.data.val_y, metric=fn),
                             self.epochs_done)

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
    if rc.model.checkpoint:  # missing / unexpected / misshaped keys fail here, in one line
        ckpt.load_into(fresh, rc.model.checkpoint)
    check_fits(fresh, splits.spec, rc.model)
    QUANTIZERS.get(rc.quantization.mode).handler.check(fresh, rc.quantization)
    check_pruning(fresh, rc.pruning, splits.spec.example_input(1))
    if rc.pruning.sparse_kernel:
        check_swappable(fresh, rc.pruning, splits.spec.example_input(1))
    runtime_hook.check(fresh, rc, splits.spec)  # e.g. an op ONNX cannot express
    return rc, splits


def run(cfg: DictConfig | dict[str, Any], sink: dict[str, Any] | None = None
        ) -> float | tuple[float, ...]:
    """Validate, then execute one run, tracked in MLflow when enabled; returns the objectives.
    `sink` (the Python API's) receives the config, metrics, artifact, run id and final model."""
    M.retain_freed_memory()  # from the start, so every trial of a process trains alike too
    rc, splits = check(cfg)
    with _threads(rc.threads):
        if not rc.tracking.enabled:
            values = objectives(rc, execute(rc, splits, None, sink))
        else:
            mlrun = tracking.start_run(rc.tracking, run_name=default_run_name(rc))
            with tracking.run_status(mlrun):  # a missing objective ends the run FAILED too
                values = objectives(rc, execute(rc, splits, mlrun, sink))
    return values[0] if len(values) == 1 else values


def objectives(rc: RunConfig, results: dict[str, float]) -> tuple[float, ...]:
    """The values a sweeper gets. RunConfig refused objectives this config does not log before
    training (config.check_produced); one still missing is a one-line error, not a KeyError."""
    missing = [name for name in rc.objectives if name not in results]
    if missing:
        raise ConfigError(f"objectives={missing[0]}: this run did not log it")
    return tuple(float(results[name]) for name in rc.objectives)


def default_run_name(rc: RunConfig) -> str:
    """A readable name for the MLflow UI, e.g. `mlp-digits-unstructured0.9-dynamic_int8`."""
    if rc.tracking.run_name:
        return rc.tracking.run_name
    width = "" if rc.model.width == 1 else f"x{rc.model.width:g}"
    p = rc.pruning
    prune = "dense" if p.method == "none" else f"{p.method}{p.sparsity:g}"
    return f"{rc.model.name}{width}-{rc.data.name}-{prune}-{rc.quantization.mode}"


def trial_reporter(job: JobContext) -> Reporter | None:
    """The trial's reporter when this job is a trial of a sweep that prunes; a single run (or a
    sweep without a pruner) never imports the sweep layer."""
    if job.trial is None:
        return None
    from compression.sweep.pruners import TrialReporter

    return TrialReporter.of(job)


def execute(rc: RunConfig, splits: data_mod.Splits, mlrun: tracking.Run | None,
            sink: dict[str, Any] | None = None) -> dict[str, float]:
    t_start = time.perf_counter()
    M.reset_peak_rss()  # peak_rss_mb: this run's peak, not earlier jobs' of the same process
    session = Session(rc, splits, reporter=trial_reporter(JobContext.current()))
    if mlrun is not None:
        mlrun.log_params(tracking.flatten(rc.params()))
        mlrun.set_tags({"threads": rc.latency_threads, "train_threads": rc.threads})
        from compression.data.mlflow_input import log_dataset  # MLflow: only when tracking

        log_dataset(mlrun.client, mlrun.id, rc.data, splits)

    # Untracked runs get a unique folder too: jobs of a multirun can start within one second.
    local_id = f"local-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
    out_dir = rc.paths.artifacts_dir / (mlrun.id if mlrun else local_id)
    baseline = get_baseline(rc.model, rc.data, rc.train, rc.seed, splits, rc.paths.cache_dir,
                            rc.metric)
    torch.manual_seed(rc.seed)  # pruning / fine-tuning randomness independent of cache state
    session.teacher = baseline.model.eval()  # never trained further: a deep copy is pruned
    model = copy.deepcopy(baseline.model)
    pruning_cfg = allocate_layers(rc, splits, baseline, model, session, out_dir)
    pruned = PruneResult.of(PRUNERS[rc.pruning.method](model, pruning_cfg, session))
    session.keep(pruned)
    model.eval()
    # Sparsity, nonzero params and FLOPs are counted on this fp32 graph: what pruning removed.
    # Quantization keeps op counts, and weights it rounds to zero are not pruning (they are
    # reported apart, as quant_zero_fraction).
    pruned_fp32 = model
    report_dead_channels(model, rc, session)
    if rc.pruning.sparse_kernel:  # a copy: FLOPs are still counted on the dense-kernel graph
        model, swapped = to_sparse_kernels(copy.deepcopy(model), rc.pruning)
        session.transforms += swapped.transforms
        session.extra_metrics.update(swapped.metrics)

    quant_cfg = allocate_bits(rc, splits, baseline, model, session)
    write_allocation_csv(out_dir / "allocation.csv", session.allocation)
    t0 = time.perf_counter()
    quantizer = QUANTIZERS.get(rc.quantization.mode).handler
    result = Quantized.of(quantizer.quantize(model, quant_cfg, session), quant_cfg)
    quantized = result.model
    session.timings["quantize_seconds"] = time.perf_counter() - t0
    session.extra_metrics.update(result.metrics)
    if mlrun is not None and result.tags:  # e.g. the engine `auto` picked
        mlrun.set_tags(result.tags)

    artifact = out_dir / "model.safetensors"
    stored = save_artifact(quantized, artifact, model_cfg=rc.model, spec=splits.spec,
                           quant_cfg=result.config, transforms=session.transforms,
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
    with _threads(rc.latency_threads):  # the runtime's export, evaluation and timing
        deployed = runtime_hook.deploy(rc, splits, session, baseline.model, pruned_fp32, out_dir,
                                       results, final)
    results.update(deployed.metrics if deployed else {})
    results.update(session.timings)
    results.update(session.extra_metrics)
    results["baseline_train_seconds"] = baseline.train_seconds
    results["baseline_cache_hit"] = float(baseline.cache_hit)
    results["threads"] = float(rc.latency_threads)
    results["train_threads"] = float(rc.threads)
    peak = M.peak_rss_mb()  # this run's peak (the window was reset when it began)
    if peak is not None:
        results["peak_rss_mb"] = peak
    results["total_seconds"] = time.perf_counter() - t_start

    layers_csv = write_layer_csv(out_dir / "layers.csv", rows, stored)
    if mlrun is not None:
        log_run(mlrun, rc, results, out_dir, artifact, layers_csv, baseline,
                session.extra_params)
        runtime_hook.log(mlrun, rc, deployed, artifact, splits.spec)
    log.info(summary_line(rc, results, what_was_pruned(baseline.model, rc)))
    if sink is not None:
        sink.update(config=rc, metrics=results, artifact=artifact, model=final,
                    run_id=mlrun.id if mlrun else None)
    return results


def allocate_layers(rc: RunConfig, splits: data_mod.Splits, baseline: Baseline,
                    model: nn.Module, session: Session, out_dir: Path) -> PruningConfig:
    """The pruning config to run: rc.pruning, or with per-layer targets from the sensitivity
    allocation (logged as the param `pruning.allocated` and the artifact allocation.csv)."""
    cfg, targets = allocated_config(model, rc.pruning, splits.val_x, splits.val_y,
                                    rc.paths.cache_dir, baseline.path)
    if targets:
        session.extra_params["pruning.allocated"] = bit_allocation.compact(
            {n: f"{s:.4g}" for n, s in targets.items()}, tracking.MAX_PARAM_LEN)
        for name, target in targets.items():
            session.allocation.setdefault(name, {}).update(
                weights=model.get_submodule(name).weight.numel(),
                target_sparsity=f"{target:.6f}", uniform_sparsity=rc.pruning.sparsity)
    return cfg


def allocate_bits(rc: RunConfig, splits: data_mod.Splits, baseline: Baseline, model: nn.Module,
                  session: Session) -> Any:
    """The quantization config to run: rc.quantization, or with per-layer bit widths from the
    sensitivity pass on the model about to be quantized (logged as the param
    `quantization.allocated` and the `bits` column of allocation.csv)."""
    cfg, bits = bit_allocation.allocated_config(
        model, rc.quantization, splits.val_x, splits.val_y, rc.paths.cache_dir,
        baseline.path.stem)
    if bits:
        session.extra_params["quantization.allocated"] = bit_allocation.compact(
            bits, tracking.MAX_PARAM_LEN)
        for name, b in bits.items():
            session.allocation.setdefault(name, {}).update(
                weights=model.get_submodule(name).weight.numel(), bits=b,
                uniform_bits=getattr(rc.quantization, "bits", ""))
    return cfg


ALLOCATION_COLUMNS = ["layer", "weights", "target_sparsity", "uniform_sparsity", "bits",
                      "uniform_bits"]


def write_allocation_csv(path: Path, rows: dict[str, dict[str, Any]]) -> None:
    """One row per allocated layer: its sparsity and / or bit width against the uniform one
    (blank where that part was not allocated)."""
    if not rows:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(ALLOCATION_COLUMNS)
        for name, row in rows.items():
            w.writerow([name, *(row.get(c, "") for c in ALLOCATION_COLUMNS[1:])])


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
            x = x.repeat((batch + len(x) - 1) // len(x), *[1] * (x.dim() - 1))[:batch]
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


def log_run(
    mlrun: tracking.Run,
    rc: RunConfig,
    results: dict[str, float],
    out_dir: Path,
    artifact: Path,
    layers_csv: Path,
    baseline: Baseline,
    session_params: dict[str, str] | None = None,
) -> None:
    mlrun.log_metrics(results)
    if session_params:
        mlrun.log_params(session_params)
    if (out_dir / "allocation.csv").exists():
        mlrun.log_artifact(out_dir / "allocation.csv")
    mlrun.set_tags(baseline.tags())
    config_file = out_dir / "config.yaml"
    config_file.write_text(OmegaConf.to_yaml(OmegaConf.create(rc.params())))
    mlrun.log_artifact(config_file)
    mlrun.log_artifact(layers_csv)
    if rc.tracking.log_model:
        mlrun.log_artifact(artifact, "model")


def what_was_pruned(model: nn.Module, rc: RunConfig) -> str:
    """The layers pruned, when not every prunable layer at the one target (include, exclude,
    overrides, keep_first_last): `[fc2]`, `[fc1@0.9, fc2@0.5]` (summary_line adds the channels
    and parameters a method removed)."""
    if rc.pruning.method in ("none", "small_dense"):
        return ""
    targets = layer_targets(model, rc.pruning)
    same = all(t == rc.pruning.sparsity for t in targets.values())
    if same and set(targets) == set(prunable_layers(model)):
        return ""  # everything at the one target: the method@sparsity says it all
    return "[" + ", ".join(n if same else f"{n}@{t:.4g}" for n, t in targets.items()) + "]"


def summary_line(rc: RunConfig, r: dict[str, float], pruned: str = "") -> str:
    removed = [f"{what} -{r[key]:.0%}" for what, key in (("channels", "channels_removed_fraction"),
                                                         ("params", "param_reduction"))
               if r.get(key)]
    pruned = " ".join([pruned, ", ".join(removed)]).strip()
    lat = (f" latency {r['latency_ms']:.3f}ms (speedup {r['speedup']:.2f}x, "
           f"batch {r['batch_speedup']:.2f}x)" if "latency_ms" in r else "")
    q = rc.quantization
    bits = getattr(q, "bits", None) if q.mode in ("lowbit", "kmeans") else None
    if getattr(q, "allocation", "uniform") == "sensitivity":
        bits = f"mixed<={getattr(q, 'budget_bits', 0):g}"
    quant = q.mode + (f"/{bits}" if bits is not None else "")  # lowbit/4, lowbit/mixed<=3
    if "weight_bits" in r and q.mode != "none":
        quant += f" ({r['weight_bits']:.3g} bits/weight)"
    return (
        f"{rc.model.name}/{rc.data.name} pruning={rc.pruning.method}@{rc.pruning.sparsity:.4g} "
        f"{pruned + ' ' if pruned else ''}quant={quant}: "
        f"{'acc' if rc.metric.is_default else rc.metric.name} {r['accuracy']:.4f} "
        f"(baseline {r['baseline_accuracy']:.4f}, val {r['val_accuracy']:.4f}) "
        f"sparsity {r['sparsity']:.3f} size {int(r['size_bytes'])}B "
        f"(dense {int(r['dense_size_bytes'])}B, {r['compression_ratio']:.2f}x){lat} "
        f"in {r['total_seconds']:.1f}s"
    )
