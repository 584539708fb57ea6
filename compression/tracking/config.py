"""The `tracking` config section (torch- and MLflow-free: checked before any work)."""

from __future__ import annotations

from dataclasses import dataclass

from compression.core import validation as v
from compression.core.errors import ConfigError
from compression.tracking.store import check_uri

PARENT_TAG = "mlflow.parentRunId"
MAX_PARAM_LEN = 6000


@dataclass
class TrackingConfig:
    enabled: bool = True
    uri: str | None = None  # None: $MLFLOW_TRACKING_URI, else sqlite:///<project root>/mlflow.db
    experiment: str = "compression"
    run_name: str | None = None
    parent_run_id: str | None = None  # None: $COMPRESSION_PARENT_RUN_ID (set for multiruns)
    log_model: bool = True  # upload the compressed artifact file

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise ConfigError(f"tracking.enabled={self.enabled!r} must be true or false")
        if not isinstance(self.experiment, str) or not self.experiment.strip():
            raise ConfigError(f"tracking.experiment={self.experiment!r} must be a non-empty name")
        if self.uri is not None and not isinstance(self.uri, str):
            raise ConfigError(f"tracking.uri={self.uri!r} must be a URI string or null")
        if self.uri:
            check_uri(self.uri)
        v.one_of("tracking.log_model", self.log_model, [True, False])
