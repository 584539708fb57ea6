"""The compressed model as an MLflow model (artifact `mlflow_model/` of its run), loadable with
`mlflow.pyfunc.load_model` and servable with `mlflow models serve`, and the registry step.

Nothing here unpickles: an ONNX Runtime run logs the onnx flavor (the ORT file itself); any
other run logs a pyfunc whose loader (`compression.runtime.pyfunc_loader`) rebuilds the model
from our safetensors artifact through `load_artifact`, which refuses user factories it was not
handed a trusted config for. The pytorch flavor is not used: it pickles the module."""

from __future__ import annotations

import importlib.metadata
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from compression.core.lazy import np

if TYPE_CHECKING:
    from compression.data import DataSpec
    from compression.tracking import Run

ARTIFACT_PATH = "mlflow_model"
SWEET_SPOT_ALIAS = "sweet-spot"


def _pins(*names: str) -> list[str]:
    """Exact pins of what loading needs (given, so MLflow does not infer them by loading the
    model in a subprocess, which costs seconds per run)."""
    return [f"{n}=={importlib.metadata.version(n)}" for n in names]


def save(path: Path, artifact: Path, onnx_file: Path | None, spec: DataSpec) -> Path:
    """Write the MLflow model directory at `path`; returns it. The onnx flavor's predict gives
    {"logits": array}; the pyfunc over the artifact gives the array."""
    import mlflow
    from mlflow.models import infer_signature

    example = spec.example_input(1).numpy()
    out = np.zeros((1, spec.num_classes), dtype=np.float32)
    signature = infer_signature(example, out)
    if onnx_file is not None:
        import onnx

        mlflow.onnx.save_model(onnx.load(str(onnx_file)), str(path), signature=signature,
                               input_example=example,
                               pip_requirements=_pins("onnx", "onnxruntime"),
                               onnx_execution_providers=["CPUExecutionProvider"],
                               save_as_external_data=False)
    else:
        from compression.runtime import pyfunc_loader

        mlflow.pyfunc.save_model(str(path), loader_module=pyfunc_loader.__name__,
                                 data_path=str(artifact), signature=signature,
                                 input_example=example,
                                 pip_requirements=_pins("torch", "safetensors"))
    return path


def log(mlrun: Run, artifact: Path, onnx_file: Path | None, spec: DataSpec) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = save(Path(tmp) / ARTIFACT_PATH, artifact, onnx_file, spec)
        mlrun.client.log_artifacts(mlrun.id, str(path), ARTIFACT_PATH)


def register(client: object, run_id: str, name: str, tags: dict[str, str]) -> str:
    """Register run `run_id`'s MLflow model as a new version of `name`, alias it `sweet-spot`,
    tag it; returns the version. A run logged without one fails in one line."""
    from mlflow.exceptions import MlflowException

    from compression.core.errors import ConfigError

    run = client.get_run(run_id)  # type: ignore[attr-defined]
    try:
        listed = client.list_artifacts(run_id, ARTIFACT_PATH)  # type: ignore[attr-defined]
    except MlflowException:
        listed = []
    if not any(f.path.endswith("MLmodel") for f in listed):
        raise ConfigError(f"run {run_id} has no MLflow model to register (it was logged with "
                          "tracking.log_model=false); rerun it with tracking.log_model=true")
    try:
        client.get_registered_model(name)  # type: ignore[attr-defined]
    except MlflowException:
        client.create_registered_model(name)  # type: ignore[attr-defined]
    source = f"{run.info.artifact_uri}/{ARTIFACT_PATH}"
    version = client.create_model_version(name, source, run_id=run_id,  # type: ignore[attr-defined]
                                          tags=tags)
    client.set_registered_model_alias(name, SWEET_SPOT_ALIAS, version.version)  # type: ignore[attr-defined]
    return str(version.version)
