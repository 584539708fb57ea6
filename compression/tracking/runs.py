"""One MLflow run per job: opened as the child of the sweep's parent run (from the job
context), written through an explicit client, and ended FINISHED, FAILED, KILLED or PRUNED."""

from __future__ import annotations

import contextlib
import logging
import signal
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compression.core import interrupt
from compression.core.errors import ConfigError, TrialPruned
from compression.core.job import JobContext
from compression.core.redaction import redact
from compression.tracking.config import MAX_PARAM_LEN, PARENT_TAG, TrackingConfig
from compression.tracking.experiments import ensure_experiment
from compression.tracking.status import FAILED, FINISHED, KILLED
from compression.tracking.store import _retry, client_for
from compression.tracking.system import system_tags

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)


class Run:
    """One MLflow run, addressed by id through a client."""

    def __init__(self, client: MlflowClient, run_id: str) -> None:
        self.client, self.id = client, run_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, redact(val)[:MAX_PARAM_LEN]) for k, val in params.items()]
        for i in range(0, len(items), 100):  # MLflow's per-batch limit
            _retry(self.client.log_batch, self.id, params=items[i : i + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(val), now, step) for k, val in metrics.items()]
        for i in range(0, len(items), 1000):
            _retry(self.client.log_batch, self.id, metrics=items[i : i + 1000])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, redact(val)[:5000]) for k, val in tags.items()]
        _retry(self.client.log_batch, self.id, tags=items)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        _retry(self.client.log_artifact, self.id, str(path), artifact_path)

    def end(self, status: str) -> None:
        _retry(self.client.set_terminated, self.id, status)


def start_run(
    cfg: TrackingConfig, tags: Mapping[str, str] | None = None, run_name: str | None = None
) -> Run:
    client = client_for(cfg.uri)
    exp_id = _retry(ensure_experiment, client, cfg.experiment)
    # the launcher's tags (the Optuna sweeper's study_name and trial_number) and parent run
    job = JobContext.current()
    all_tags = {**system_tags(), "mlflow.source.name": "train.py", **job.tags, **(tags or {})}
    parent = cfg.parent_run_id or job.parent_run_id
    if not parent and in_multirun():
        # a sweep whose parent run could not be opened: a lone run here would be invisible to
        # the sweep's nesting, analysis and stale-run cleanup
        raise ConfigError("this job of a multirun has no MLflow parent run (the sweep could not "
                          "open one); not logging it as a lone run")
    if parent:
        all_tags[PARENT_TAG] = parent
    all_tags.setdefault("run_role", "child" if parent else "single")
    run = _retry(client.create_run, exp_id, run_name=run_name or cfg.run_name,
                 tags=redacted(all_tags))
    log.info("mlflow run %s (experiment %r at %s)", run.info.run_id, cfg.experiment,
             redact(client.tracking_uri))
    return Run(client, run.info.run_id)


def redacted(tags: Mapping[str, Any]) -> dict[str, str]:
    """Tag values as MLflow stores them, credentials redacted (see compression.core.redaction)."""
    return {k: redact(val)[:5000] for k, val in tags.items()}


def in_multirun() -> bool:
    """True inside a job of a Hydra multirun (`-m`)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


@contextlib.contextmanager
def run_status(run: Run) -> Iterator[Run]:
    """End `run` as FINISHED, FAILED (error recorded as tags) or KILLED (Ctrl-C / SIGTERM).

    Without this MLflow's atexit hook would mark a crashed run FINISHED (mlflow #3932)."""
    previous = signal.getsignal(signal.SIGTERM)
    in_main = _is_main_thread()
    if in_main:
        signal.signal(signal.SIGTERM, interrupt.raise_interrupt)  # so `kill` ends the run as KILLED
    try:
        yield run
    except KeyboardInterrupt as e:
        run.set_tags({"error_type": "KeyboardInterrupt", "error": str(e) or "interrupted"})
        run.end(KILLED)
        raise
    except TrialPruned as e:  # stopped by the sweep's pruner: not a failure of the config
        run.set_tags({"trial_state": "PRUNED", "pruned": str(e)})
        run.log_metrics({"pruned_at_epoch": float(e.step), "pruned_val_accuracy": e.value})
        run.end(KILLED)
        raise
    except BaseException as e:
        run.set_tags({"error_type": type(e).__name__, "error": str(e)[:5000] or repr(e)})
        run.end(FAILED)
        raise
    else:
        run.end(FINISHED)
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)


def _is_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
