"""A run's dataset as an MLflow dataset input (the UI's Dataset column): name, source, digest,
schema (input shape, label) and profile (split sizes, classes).

Logged through the run's client (`log_inputs`, what `mlflow.log_input` calls) rather than
MLflow's global active run, which jobs sharing a process must not touch.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from mlflow.data.meta_dataset import MetaDataset
from mlflow.data.sources import LocalArtifactDatasetSource
from mlflow.entities import DatasetInput, InputTag
from mlflow.types.schema import Schema, TensorSpec
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from compression.data.config import DataConfig, Splits


class SplitsDataset(MetaDataset):
    """Metadata only: the data themselves stay where they are."""

    def __init__(self, cfg: DataConfig, splits: Splits) -> None:
        self._sizes = {"train": len(splits.train_y), "val": len(splits.val_y),
                       "test": len(splits.test_y)}
        self._spec = splits.spec
        schema = Schema([
            TensorSpec(np.dtype(np.float32), (-1, *splits.spec.input_shape), "x"),
            TensorSpec(np.dtype(np.int64), (-1,), "label"),
        ])
        source = LocalArtifactDatasetSource(splits.source or cfg.name)
        super().__init__(source, name=cfg.name, digest=splits.digest or None, schema=schema)

    @property
    def profile(self) -> dict[str, Any]:
        return {**{f"{k}_rows": n for k, n in self._sizes.items()},
                "input_shape": list(self._spec.input_shape),
                "num_classes": self._spec.num_classes}

    def to_dict(self) -> dict[str, str]:
        return {**super().to_dict(), "profile": json.dumps(self.profile)}


def log_dataset(client: Any, run_id: str, cfg: DataConfig, splits: Splits) -> SplitsDataset:
    """Log the run's data as one dataset input, context `train` (val/test are its splits)."""
    from compression.tracking import retry_concurrent_insert  # (tracking imports MLflow)

    ds = SplitsDataset(cfg, splits)
    entity = DatasetInput(ds._to_mlflow_entity(), tags=[InputTag(MLFLOW_DATASET_CONTEXT, "train")])
    # trials starting together log the same dataset: MLflow's get-or-insert of it can collide
    retry_concurrent_insert(lambda: client.log_inputs(run_id, datasets=[entity]))
    return ds
