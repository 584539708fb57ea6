"""One real run end to end on digits, tracked in a temporary MLflow database."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from compression.artifact.format import load_artifact
from compression.config.run import RunConfig
from compression.core.errors import ConfigError
from compression.run import pipeline
from compression.training.loop import evaluate

# The metric contract of DESIGN.md: every tracked run logs all of these.
CONTRACT = [
    "accuracy", "val_accuracy", "baseline_accuracy", "accuracy_drop", "sparsity", "params",
    "nonzero_params", "flops", "effective_flops", "theoretical_speedup", "size_bytes",
    "dense_size_bytes", "compression_ratio", "latency_ms", "latency_p90_ms", "batch_latency_ms",
    "throughput", "speedup", "model_bytes", "peak_rss_mb",
]


def _runs(uri: str) -> list:
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("compression")
    return [] if exp is None else client.search_runs([exp.experiment_id])


def test_pruned_run_logs_every_metric_and_its_artifact_reloads(compose_cfg, tracking_uri) -> None:
    cfg = compose_cfg("pruning=unstructured", "pruning.sparsity=0.9",
                      "objectives=[val_accuracy,size_bytes]")
    val_acc, size = pipeline.run(cfg)
    [run] = _runs(tracking_uri)
    m = run.data.metrics
    assert run.info.status == "FINISHED"
    assert set(CONTRACT) <= set(m)
    assert abs(m["sparsity"] - 0.9) < 0.005
    assert m["size_bytes"] < 0.2 * m["dense_size_bytes"]
    assert (val_acc, size) == (m["val_accuracy"], m["size_bytes"])
    assert run.data.params["pruning.sparsity"] == "0.9"
    assert run.data.tags["run_role"] == "single" and run.data.tags["git_commit"]
    assert m["baseline_cache_hit"] == 0.0
    assert m["val_accuracy_drop"] == pytest.approx(m["baseline_val_accuracy"] - val_acc)

    # The logged accuracy is that of the artifact: reload the uploaded file and re-evaluate.
    client = MlflowClient(tracking_uri=tracking_uri)
    local = Path(client.download_artifacts(run.info.run_id, "model/model.safetensors"))
    assert local.stat().st_size == m["size_bytes"]
    model, _ = load_artifact(local)
    from compression.data import load

    splits = load(RunConfig.from_cfg(cfg).data)
    assert evaluate(model, splits.test_x, splits.test_y) == m["accuracy"]
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "layers.csv", "model"} <= names


def test_second_run_reuses_the_cached_baseline(compose_cfg, tracking_uri) -> None:
    pipeline.run(compose_cfg("quantization=dynamic_int8", "model=lenet5"))
    pipeline.run(compose_cfg("quantization=dynamic_int8", "model=lenet5"))
    first, second = sorted(_runs(tracking_uri), key=lambda r: r.info.start_time)
    assert first.data.metrics["baseline_cache_hit"] == 0.0
    assert second.data.metrics["baseline_cache_hit"] == 1.0
    assert second.data.metrics["baseline_train_seconds"] == 0.0
    assert first.data.metrics["baseline_accuracy"] == second.data.metrics["baseline_accuracy"]


def test_dynamic_int8_mlp_size_is_at_most_030_of_dense(compose_cfg, tracking_uri) -> None:
    pipeline.run(compose_cfg("quantization=dynamic_int8", "quantization.engine=auto"))
    [run] = _runs(tracking_uri)
    m = run.data.metrics
    assert m["size_bytes"] <= 0.3 * m["dense_size_bytes"]
    assert m["latency_ms"] > 0 and m["baseline_latency_ms"] > 0
    # `auto` is logged as asked (params) and as resolved (tag), with each candidate's timing
    assert run.data.params["quantization.engine"] == "auto"
    picked = run.data.tags["quantization_engine"]
    assert picked in {"x86", "fbgemm", "onednn"} and f"quant_auto_{picked}_ms" in m


def test_exception_marks_the_run_failed_with_the_error(compose_cfg, tracking_uri) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        pipeline.run(compose_cfg("~model", "+model._target_=factories.exploding_model"))
    [run] = _runs(tracking_uri)
    assert run.info.status == "FAILED"
    assert run.data.tags["error_type"] == "RuntimeError"
    assert "boom" in run.data.tags["error"]


def test_ctrl_c_marks_the_run_killed(compose_cfg, tracking_uri) -> None:
    with pytest.raises(KeyboardInterrupt):
        pipeline.run(compose_cfg("~model", "+model._target_=factories.interrupted_model"))
    [run] = _runs(tracking_uri)
    assert run.info.status == "KILLED"


def test_bad_config_fails_before_any_run_is_recorded(compose_cfg, tracking_uri) -> None:
    with pytest.raises(ConfigError):
        pipeline.run(compose_cfg("pruning=unstructured", "pruning.sparsity=1.5"))
    assert _runs(tracking_uri) == []


def test_untracked_run_returns_objectives(compose_cfg, tracking_uri) -> None:
    acc = pipeline.run(compose_cfg("tracking=off"))
    assert 0.5 < acc <= 1.0
    assert _runs(tracking_uri) == []


def test_quantization_rounding_is_not_counted_as_pruning(compose_cfg, tracking_uri) -> None:
    """A dense model quantized to 2 bits: about half its weights round to zero, but nothing was
    pruned: sparsity 0 and no theoretical speed-up; the rounding is reported apart."""
    import csv

    pipeline.run(compose_cfg("quantization=lowbit", "quantization.bits=2",
                             "measure.latency=false"))
    [run] = _runs(tracking_uri)
    m = run.data.metrics
    assert m["sparsity"] == 0.0
    assert m["nonzero_params"] == m["params"]
    assert m["effective_flops"] == m["flops"]
    assert m["theoretical_speedup"] == pytest.approx(1.0)
    assert m["quant_zero_fraction"] > 0.2  # 2-bit codes: many weights round to zero
    client = MlflowClient(tracking_uri=tracking_uri)
    text = Path(client.download_artifacts(run.info.run_id, "layers.csv")).read_text()
    rows = list(csv.DictReader(text.splitlines()))
    assert all(r["weight_zeros"] == "0" for r in rows)
    assert sum(int(r["quant_weight_zeros"]) for r in rows) > 0


def test_dead_internal_channels_are_reported_per_layer_and_warned(compose_cfg, tracking_uri,
                                                                  caplog) -> None:
    """Unstructured pruning at 99% on the first layer leaves whole neurons without a weight."""
    import csv

    pipeline.run(compose_cfg("pruning=unstructured", "pruning.sparsity=0.5",
                             "pruning.overrides={fc1:0.995}", "measure.latency=false"))
    [run] = _runs(tracking_uri)
    m = run.data.metrics
    client = MlflowClient(tracking_uri=tracking_uri)
    text = Path(client.download_artifacts(run.info.run_id, "layers.csv")).read_text()
    rows = {r["layer"]: r for r in csv.DictReader(text.splitlines())}
    assert int(rows["fc1"]["dead_rows"]) > 0
    internal = sum(int(r["dead_rows"]) for name, r in rows.items() if name != "fc3")
    assert m["dead_internal_channels"] == internal
    assert m["dead_output_rows"] == int(rows["fc3"]["dead_rows"])
    assert any("internal channel(s) with all-zero weights (fc1 " in r.message
               for r in caplog.records)


def test_peak_rss_is_per_run(compose_cfg, tracking_uri) -> None:
    """Memory an earlier job of the same process peaked at (here a touched 512 MiB mapping,
    unmapped before the run) is not this run's peak, unlike the process-lifetime peak."""
    import mmap
    import resource

    from compression.config.run import RUN_METRICS

    size = 512 << 20
    buf = mmap.mmap(-1, size)
    for i in range(0, size, 4096):
        buf[i] = 1
    buf.close()
    # ru_maxrss is the lifetime peak until something resets the window (the run will)
    lifetime_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    pipeline.run(compose_cfg("measure.latency=false"))
    [run] = _runs(tracking_uri)
    assert 0 < run.data.metrics["peak_rss_mb"] < lifetime_mb - 256
    assert "peak_rss_mb" in RUN_METRICS  # offered as an objective: it is per run here
