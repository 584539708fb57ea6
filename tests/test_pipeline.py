"""One real run end to end on digits, tracked in a temporary MLflow database."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from compression import pipeline
from compression.config import RunConfig
from compression.errors import ConfigError
from compression.export import load_artifact
from compression.training import evaluate

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
