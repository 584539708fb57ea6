"""Pruning methods end to end through the pipeline: logged, exported, reloaded."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from compression.artifact.format import load_artifact
from compression.core.errors import ConfigError
from compression.run import pipeline


def _run(uri: str):
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("compression")
    [run] = client.search_runs([exp.experiment_id])
    return client, run


@pytest.mark.slow  # ~15 s: MLflow database creation + baseline training
def test_structured_dynamic_int8_exports_reloads_and_logs_its_extras(compose_cfg,
                                                                      tracking_uri) -> None:
    pipeline.run(compose_cfg("model=lenet5", "pruning=structured", "quantization=dynamic_int8",
                             "data.limit=300", "measure.latency=false"))
    client, run = _run(tracking_uri)
    m = run.data.metrics
    assert run.info.status == "FINISHED"
    assert m["channels_removed_fraction"] == pytest.approx(0.5, abs=0.02)
    assert m["param_reduction"] > 0.6 and m["structured_physical"] == 1.0
    # Smaller, not sparser (int8 rounds a few tiny weights to exact zeros).
    assert m["theoretical_speedup"] > 2.5 and m["sparsity"] < 0.02
    local = Path(client.download_artifacts(run.info.run_id, "model/model.safetensors"))
    model, meta = load_artifact(local)
    assert meta["transforms"][0]["kind"] == "channels"
    assert model.fc1.weight().shape == (60, 32)  # quantized Linear: 8 channels x 2 x 2 inputs


def test_structured_refusal_happens_before_the_baseline_is_trained(compose_cfg,
                                                                   tracking_uri) -> None:
    with pytest.raises(ConfigError, match="layer 'conv2'"):
        pipeline.run(compose_cfg("~model", "+model._target_=test_pruning_structured.UserNet",
                                 "+model.joint=roll", "pruning=structured"))
    assert MlflowClient(tracking_uri=tracking_uri).get_experiment_by_name("compression") is None
