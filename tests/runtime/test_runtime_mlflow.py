"""tracking.log_model=true: the compressed model as an MLflow model that mlflow.pyfunc loads
(onnx flavor for ORT runs, a pickle-free pyfunc over the safetensors artifact otherwise), and
`analyze.py sweet-spot --register NAME` putting the sweet spot in the Model Registry."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient

import analyze
from compression.config.run import RunConfig
from compression.data import load
from compression.run import pipeline
from compression.runtime.mlflow_model import ARTIFACT_PATH


@pytest.fixture
def global_uri(tracking_uri: str, monkeypatch: pytest.MonkeyPatch):
    """mlflow.pyfunc.load_model resolves runs:/ and models:/ through MLflow's global URIs
    (set_tracking_uri also exports $MLFLOW_TRACKING_URI): set them, and undo both after."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    yield tracking_uri
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)


def _accuracy(pyfunc_model, cfg) -> float:
    splits = load(RunConfig.from_cfg(cfg).data)
    out = pyfunc_model.predict(splits.test_x.numpy())
    logits = np.asarray(out["logits"] if isinstance(out, dict) else out)  # onnx flavor: a dict
    return float((logits.argmax(1) == splits.test_y.numpy()).mean())


def _only_run(uri: str):
    client = MlflowClient(tracking_uri=uri)
    [run] = client.search_runs([client.get_experiment_by_name("compression").experiment_id])
    return client, run


def test_ort_run_logs_an_onnx_model_that_pyfunc_loads(compose_cfg, tracking_uri, global_uri
                                                      ) -> None:
    cfg = compose_cfg("runtime=onnxruntime", "quantization=dynamic_int8",
                      "tracking.log_model=true")
    pipeline.run(cfg)
    client, run = _only_run(tracking_uri)
    assert run.data.tags["runtime"] == "onnxruntime" and run.data.tags["runtime_opset"] == "18"
    names = {a.path for a in client.list_artifacts(run.info.run_id, "runtime")}
    assert names == {"runtime/model.onnx"}
    local = client.download_artifacts(run.info.run_id, ARTIFACT_PATH)
    spec = yaml.safe_load(Path(local, "MLmodel").read_text())
    assert "onnx" in spec["flavors"] and spec["signature"]["inputs"]
    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/{ARTIFACT_PATH}")
    assert _accuracy(model, cfg) == run.data.metrics["rt_accuracy"]


def test_torch_run_logs_a_pyfunc_over_the_safetensors_artifact(compose_cfg, tracking_uri,
                                                               global_uri) -> None:
    cfg = compose_cfg("quantization=fp16", "tracking.log_model=true")
    pipeline.run(cfg)
    client, run = _only_run(tracking_uri)
    local = client.download_artifacts(run.info.run_id, ARTIFACT_PATH)
    spec = yaml.safe_load(Path(local, "MLmodel").read_text())
    # the loader named is ours (no pickle, no cloudpickled python_model)
    assert spec["flavors"]["python_function"]["loader_module"] == (
        "compression.runtime.pyfunc_loader")
    assert not list(Path(local).rglob("*.pkl"))
    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/{ARTIFACT_PATH}")
    assert _accuracy(model, cfg) == run.data.metrics["accuracy"]


def test_register_the_sweet_spot_and_load_it_by_alias(compose_cfg, tracking_uri, tmp_path,
                                                      global_uri) -> None:
    for sparsity in ("0.3", "0.6"):
        cfg = compose_cfg("runtime=onnxruntime", "pruning=structured",
                          f"pruning.sparsity={sparsity}", "tracking.log_model=true")
        pipeline.run(cfg)
    name = f"rt-test-{tmp_path.name}"
    code = analyze.main(["sweet-spot", "--experiment", "compression", "--tracking-uri",
                         tracking_uri, "--by", "rt_latency", "--tolerance", "0.2",
                         "--register", name, "--out", str(tmp_path / "a"), "--no-log"])
    assert code == 0
    client = MlflowClient(tracking_uri=tracking_uri)
    version = client.get_model_version_by_alias(name, "sweet-spot")
    run = client.get_run(version.run_id)
    assert float(version.tags["rt_accuracy"]) == pytest.approx(run.data.metrics["rt_accuracy"])
    model = mlflow.pyfunc.load_model(f"models:/{name}@sweet-spot")
    assert _accuracy(model, cfg) == run.data.metrics["rt_accuracy"]


def test_register_a_run_without_an_mlflow_model_fails_in_one_line(compose_cfg, tracking_uri,
                                                                  tmp_path, capsys) -> None:
    pipeline.run(compose_cfg("tracking.log_model=false"))
    code = analyze.main(["sweet-spot", "--experiment", "compression", "--tracking-uri",
                         tracking_uri, "--tolerance", "1", "--register", "x", "--out",
                         str(tmp_path / "a"), "--no-log"])
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after any library warnings
    assert code == 2 and err.startswith("error: ") and "log_model=true" in err
