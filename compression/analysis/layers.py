"""Per-layer data (pure apart from reading a run's artifacts): parameters, bytes and sparsity per
layer, weights for histograms, and the per-layer sensitivity table of a sensitivity sweep."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient
from torch import nn

from compression.artifact.format import load_artifact
from compression.data import DataSpec
from compression.measure import PRUNABLE_TYPES, dense_weight, flops_per_layer, layer_stats
from compression.models.build import ModelConfig

LAYER_COLUMNS = ["layer", "type", "params", "weight_numel", "weight_zeros", "sparsity",
                 "nonzero_params", "bytes", "artifact_bytes", "flops"]


def run_layers(client: MlflowClient, run_id: str) -> pd.DataFrame:
    """The run's `layers.csv` artifact (columns: LAYER_COLUMNS)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = client.download_artifacts(run_id, "layers.csv", tmp)
        return pd.read_csv(path)


def run_model(client: MlflowClient, run_id: str, model_cfg: ModelConfig | None = None
              ) -> nn.Module:
    """The run's exported artifact, rebuilt and loaded (what the run evaluated). A user
    `_target_` model loads only when `model_cfg` (the analysis command's own overrides, never
    the run's files) names the same factory."""
    with tempfile.TemporaryDirectory() as tmp:
        path = client.download_artifacts(run_id, "model/model.safetensors", tmp)
        model, _ = load_artifact(Path(path), model_cfg)
    return model


def model_layers(model: nn.Module, spec: DataSpec) -> pd.DataFrame:
    """The same columns for a model that has no run (no artifact bytes: NaN)."""
    _, flops = flops_per_layer(model, spec.example_input(1))
    rows = [{"layer": r.name, "type": r.type, "params": r.params,
             "weight_numel": r.weight_numel, "weight_zeros": r.weight_zeros,
             "sparsity": r.weight_zeros / max(1, r.weight_numel),
             "nonzero_params": r.nonzero_params, "bytes": r.bytes,
             "artifact_bytes": np.nan, "flops": flops.get(r.name, 0)}
            for r in layer_stats(model)]
    return pd.DataFrame(rows, columns=LAYER_COLUMNS)


def layer_weights(model: nn.Module) -> dict[str, np.ndarray]:
    """Flattened weights of every prunable (Linear / Conv, also quantized) layer, in order."""
    out = {}
    for name, module in model.named_modules():
        w = dense_weight(module) if type(module).__name__ in PRUNABLE_TYPES else None
        if w is not None:
            out[name] = w.flatten().numpy()
    return out


def sensitivity_table(frame: pd.DataFrame, y: str = "accuracy") -> pd.DataFrame:
    """Accuracy against the sparsity of the one pruned layer, seeds averaged: columns layer,
    sparsity, y_mean, y_std, n. Empty when the frame holds no single-layer runs."""
    runs = frame[frame["single_layer"].notna()] if "single_layer" in frame else frame.iloc[:0]
    cols = ["layer", "sparsity", "y_mean", "y_std", "n"]
    if runs.empty:
        return pd.DataFrame(columns=cols)
    keys = [runs["single_layer"].rename("layer"), runs["config_key"]]
    g = runs.groupby(keys, sort=False)
    out = g.agg(sparsity=("pruning.sparsity", "mean"), y_mean=(y, "mean"), y_std=(y, "std"),
                n=(y, "size")).reset_index()
    out["y_std"] = out["y_std"].fillna(0.0)
    return out[cols].sort_values(["layer", "sparsity"], kind="stable").reset_index(drop=True)
