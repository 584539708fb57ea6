"""The job context: what the process that launched a job (a sweep, a Hydra callback) tells it.

A job may run in the sweep's own process, in a forked joblib worker or in a fresh one, so the
channel is the environment (inherited by all of them, and never written into Hydra's saved
configs, so a password in a storage URL stays out of files). Every variable of that channel is
named, read and written here and nowhere else: the rest of the code asks `JobContext.current()`.
`$COMPRESSION_ROOT` is not part of it: it is the user's setting of where outputs go
(core.paths).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

WORKERS = "COMPRESSION_WORKERS"  # jobs running at once: each takes its share of the cores
PARENT_RUN_ID = "COMPRESSION_PARENT_RUN_ID"  # not MLFLOW_RUN_ID: MLflow would resume that run
TAG_PREFIX = "COMPRESSION_TAG_"  # $COMPRESSION_TAG_<name>=<value>: tag <name> of the job's run
OPTUNA_STORAGE = "COMPRESSION_OPTUNA_STORAGE"  # a pruning sweep's study storage
OPTUNA_PRUNER = "COMPRESSION_OPTUNA_PRUNER"  # {"name": ..., "kwargs": {...}} of that pruner
SWEEP_PID = "COMPRESSION_SWEEP_PID"  # the sweep process, which a fork-server worker outlives
STUDY_TAG, TRIAL_TAG = "study_name", "trial_number"  # the trial's tags, set by the sweeper


@dataclass(frozen=True)
class JobContext:
    workers: int = 1
    parent_run_id: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    optuna_storage: str | None = None
    optuna_pruner: Mapping[str, Any] | None = None
    sweep_pid: int | None = None

    @classmethod
    def current(cls, environ: Mapping[str, str] | None = None) -> JobContext:
        env = os.environ if environ is None else environ
        pruner = env.get(OPTUNA_PRUNER)
        return cls(
            workers=max(1, int(env.get(WORKERS) or 1)),
            parent_run_id=env.get(PARENT_RUN_ID) or None,
            tags={k.removeprefix(TAG_PREFIX): v for k, v in env.items()
                  if k.startswith(TAG_PREFIX)},
            optuna_storage=env.get(OPTUNA_STORAGE) or None,
            optuna_pruner=json.loads(pruner) if pruner else None,
            sweep_pid=int(env[SWEEP_PID]) if env.get(SWEEP_PID) else None,
        )

    @property
    def trial(self) -> tuple[str, int] | None:
        """(study name, trial number) when this job is a trial of a sweep that prunes."""
        study, number = self.tags.get(STUDY_TAG), self.tags.get(TRIAL_TAG)
        if not (self.optuna_pruner and self.optuna_storage and study and number):
            return None
        return study, int(number)


class Reporter(Protocol):
    """A trial's handle on its study (compression.sweep.pruners.TrialReporter): raises
    TrialPruned when the study's pruner stops the trial."""

    def report(self, value: float, step: int) -> None: ...


def job_env(workers: int | None = None, parent_run_id: str | None = None,
            tags: Mapping[str, Any] | None = None) -> dict[str, str]:
    """The variables a launcher sets for one job (Hydra's `hydra.job.env_set`)."""
    out = {f"{TAG_PREFIX}{k}": str(v) for k, v in (tags or {}).items()}
    if workers is not None:
        out[WORKERS] = str(workers)
    if parent_run_id:
        out[PARENT_RUN_ID] = parent_run_id
    return out


def set_parent_run(run_id: str | None) -> None:
    """Make `run_id` the parent of the jobs started from now on (None: no parent)."""
    if run_id:
        os.environ[PARENT_RUN_ID] = run_id
    else:
        os.environ.pop(PARENT_RUN_ID, None)


def set_pruner(storage: str | None, name: str | None, kwargs: Mapping[str, Any] | None = None
               ) -> None:
    """Tell the jobs started from now on where their trial is and which pruner judges it
    (None: they do not report)."""
    if storage is None or name is None:
        os.environ.pop(OPTUNA_PRUNER, None)
        return
    os.environ[OPTUNA_STORAGE] = storage
    os.environ[OPTUNA_PRUNER] = json.dumps({"name": name, "kwargs": dict(kwargs or {})})


def set_sweep_pid(pid: int) -> None:
    os.environ[SWEEP_PID] = str(pid)
