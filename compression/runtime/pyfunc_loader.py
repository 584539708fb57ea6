"""MLflow pyfunc loader for a compression artifact (safetensors): `mlflow.pyfunc.load_model`
calls `_load_pyfunc(data_path)`. The model is rebuilt by `load_artifact` (no pickle; user
factories refused unless trusted), fed fp32 batches cast as its quantization mode needs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from compression.core.lazy import np, torch


class CompressedModel:
    def __init__(self, path: Path) -> None:
        from compression.artifact.format import load_artifact
        from compression.quantization import QUANTIZERS

        self.model, meta = load_artifact(path)
        self.cast = QUANTIZERS.get(meta["quantization"]["mode"]).handler.cast_input

    def predict(self, data: Any, params: dict[str, Any] | None = None) -> np.ndarray:
        x = torch.as_tensor(np.asarray(data, dtype=np.float32))
        with torch.inference_mode():
            return self.model(self.cast(x)).float().numpy()


def _load_pyfunc(data_path: str) -> CompressedModel:
    return CompressedModel(Path(data_path))
