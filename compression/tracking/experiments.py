"""MLflow experiments: created once (safe when many jobs race to create the same one) and
marked so that `mlflow ui` opens them on the runs table."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from compression.core import paths

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

T = TypeVar("T")
log = logging.getLogger(__name__)


EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


def experiment_ui_path(exp_id: str) -> str:
    """The address, after `mlflow ui`'s base URL, that opens the experiment's runs table.
    MLflow 3.17's UI picks an experiment's first page from its GenAI / Model training switch
    (a browser setting, GenAI unless changed), not from the tag above; `workflowType` in the
    address sets that switch for the visit (docs/analysis.md quotes the UI's code)."""
    return f"#/experiments/{exp_id}?workflowType=machine_learning"


def ensure_experiment(client: MlflowClient, name: str) -> str:
    """Experiment id for `name`, creating it once (tolerant of a concurrent creator), tagged as
    model development so that `mlflow ui` opens its runs table; an existing experiment without
    the tag gets it too."""
    exp = client.get_experiment_by_name(name)
    exp_id = exp.experiment_id if exp is not None else _create_experiment(client, name)
    if exp is None or exp.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
        retry_concurrent_insert(
            lambda: client.set_experiment_tag(exp_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND))
    return exp_id


# What a store says when two writers insert the same key at once (SQLite, PostgreSQL through
# SQLAlchemy or an `mlflow server`): MLflow's get-or-insert of experiment tags and datasets is
# not atomic, so sweeps started together on a new store can collide.
_DUPLICATE_KEY = ("unique constraint failed", "uniqueviolation", "duplicate key",
                  "integrityerror")


def retry_concurrent_insert(write: Callable[[], T], attempts: int = 5) -> T:
    """Run an idempotent MLflow write, retrying when a concurrent writer inserted the same row
    first (the retry finds that row and updates or reuses it)."""
    from mlflow.exceptions import MlflowException

    for i in range(attempts):
        try:
            return write()
        except MlflowException as e:
            if not any(k in str(e).lower() for k in _DUPLICATE_KEY) or i == attempts - 1:
                raise
            time.sleep(0.05 * 2**i)
    raise AssertionError("unreachable")


def _create_experiment(client: MlflowClient, name: str) -> str:
    from mlflow.exceptions import MlflowException

    location = None
    if client.tracking_uri.startswith("sqlite:"):
        # Keep artifacts beside the database, not in whatever cwd the job started from.
        location = paths.default_artifact_root().as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:
        exp = client.get_experiment_by_name(name)  # somebody else created it meanwhile
        if exp is None:
            raise
        return exp.experiment_id


# What MLflow accepts in a param name (alphanumerics, _ - . space : /).
