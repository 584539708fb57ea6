"""MLflow tracking: experiment set-up, one run per job (child of a sweep's parent), run status.

Everything goes through an explicit `MlflowClient` and run ids rather than MLflow's global
"active run", so nothing leaks from one job to the next when Hydra runs jobs in one process.
The parts: config (the section), store (URI, reachability, client, retries), experiments,
system (params and system tags), runs (one run, its status), callbacks (Hydra's parent run).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from compression.core.lazy import lazy_exports
from compression.core.redaction import redact
from compression.tracking.config import MAX_PARAM_LEN, PARENT_TAG, TrackingConfig

# Checking a config needs only the section above; the rest loads when first used
__getattr__ = lazy_exports(__name__, ["experiments", "runs", "status", "store", "system"])

if TYPE_CHECKING:
    from compression.tracking.experiments import (
        EXPERIMENT_KIND,
        EXPERIMENT_KIND_TAG,
        ensure_experiment,
        experiment_ui_path,
        retry_concurrent_insert,
    )
    from compression.tracking.runs import Run, in_multirun, redacted, run_status, start_run
    from compression.tracking.status import FAILED, FINISHED, KILLED, RUNNING
    from compression.tracking.store import (
        DATABASES,
        PROBE_TIMEOUT_S,
        SCHEMES,
        StoreUnavailableError,
        _retry,
        check_reachable,
        check_uri,
        client_for,
        file_lock,
        resolve_uri,
        sqlite_store_lock,
    )
    from compression.tracking.system import PARAM_NAME, cpu_model, flatten, system_tags

__all__ = [
    "DATABASES", "EXPERIMENT_KIND", "EXPERIMENT_KIND_TAG", "FAILED", "FINISHED", "KILLED",
    "MAX_PARAM_LEN", "PARAM_NAME", "PARENT_TAG", "PROBE_TIMEOUT_S", "RUNNING", "SCHEMES", "Run",
    "StoreUnavailableError", "TrackingConfig", "_retry", "check_reachable", "check_uri",
    "client_for", "cpu_model", "ensure_experiment", "experiment_ui_path", "file_lock",
    "flatten", "in_multirun", "redact", "redacted", "resolve_uri", "retry_concurrent_insert",
    "run_status", "sqlite_store_lock", "start_run", "system_tags",
]
