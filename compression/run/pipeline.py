"""One compression run: baseline -> prune -> fine-tune -> quantize -> export -> reload -> evaluate
-> measure -> log -> objectives. The steps read top to bottom in `execute`; what each stage
does lives in its own module (session, allocation, measurement, records)."""

from __future__ import annotations

import copy
import logging
import time
import uuid
from typing import Any

import torch
from omegaconf import DictConfig

from compression import data as data_mod
from compression import measure as M
from compression import tracking
from compression.artifact.format import itemize, load_artifact, save_artifact, state_dict_bytes
from compression.config.run import RunConfig
from compression.core.errors import ConfigError
from compression.core.job import JobContext, Reporter
from compression.models import checkpoint as ckpt
from compression.models.build import build_model, check_fits
from compression.pruning import PRUNERS
from compression.pruning import check as check_pruning
from compression.pruning.base import PruneResult
from compression.pruning.sparse_kernel import check_swappable, to_sparse_kernels
from compression.quantization import QUANTIZERS, Quantized
from compression.run.allocation import allocate_bits, allocate_layers, write_allocation_csv
from compression.run.measurement import measure, report_dead_channels, write_layer_csv
from compression.run.records import default_run_name, log_run, summary_line, what_was_pruned
from compression.run.session import Session, fixed_threads
from compression.runtime import hook as runtime_hook
from compression.training.baseline import get_baseline

__all__ = ["Session", "check", "execute", "objectives", "run"]
log = logging.getLogger(__name__)


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
    with fixed_threads(rc.threads):
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
        from compression.data._mlflow_input import log_dataset  # MLflow: only when tracking

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
    for name, extra in result.layer_extra.items():  # e.g. each layer's weight error
        session.layer_extra.setdefault(name, {}).update(extra)
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
    with fixed_threads(rc.latency_threads):  # the runtime's export, evaluation and timing
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
