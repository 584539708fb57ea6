"""MLflow side of a study: one parent run per study (shared by every process and every resume),
and stale RUNNING child runs of dead workers ended as KILLED."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from mlflow.entities import Run, RunStatus
from mlflow.tracking import MlflowClient

from compression import tracking
from compression.tracking.callbacks import MlflowParentRun

log = logging.getLogger(__name__)

KILLED = RunStatus.to_string(RunStatus.KILLED)


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def study_parent(callbacks: Iterable[Any], study_name: str, tags: Mapping[str, str]
                 ) -> tracking.Run | None:
    """Tag the multirun's parent run (opened by MlflowParentRun) as `study_name`'s parent; when
    the study already has a parent (a resume, or another worker on the same study), the oldest
    one is reopened and adopted instead, so all trials of a study share one parent run."""
    cb = next((c for c in callbacks if isinstance(c, MlflowParentRun) and c.run), None)
    if cb is None or cb.run is None:
        log.info("no MLflow parent run for this multirun (tracking disabled?)")
        return None
    own = cb.run
    own.set_tags({**tags, "study_name": study_name})
    own.client.update_run(own.id, name=study_name)  # the study names its parent run
    exp_id = own.client.get_run(own.id).info.experiment_id
    oldest = own.client.search_runs(
        [exp_id], f"tags.study_name = {_quote(study_name)} and tags.run_role = 'parent'",
        order_by=["attributes.start_time ASC"], max_results=50,
    )
    first = min(oldest, key=lambda r: (r.info.start_time, r.info.run_id))
    if first.info.run_id != own.id:
        parent = tracking.Run(own.client, first.info.run_id)
        own.client.update_run(parent.id, status=RunStatus.to_string(RunStatus.RUNNING))
        parent.set_tags(tags)
        cb.adopt(parent)
        log.info("study %s continues under its MLflow parent run %s", study_name, parent.id)
        return parent
    return own


def end_stale_children(parent: tracking.Run, study_name: str, live_trials: set[int]) -> int:
    """End as KILLED every RUNNING run of `study_name` whose trial is no longer running in Optuna
    (its worker was killed: SIGKILL leaves MLflow runs RUNNING). Returns how many."""
    client: MlflowClient = parent.client
    exp_id = client.get_run(parent.id).info.experiment_id
    runs = client.search_runs(
        [exp_id], f"tags.study_name = {_quote(study_name)} and attributes.status = 'RUNNING' "
                  "and tags.run_role = 'child'", max_results=1000,
    )
    ended = 0
    for r in runs:
        number = r.data.tags.get("trial_number", "")
        if number.isdigit() and int(number) in live_trials:
            continue
        run = tracking.Run(client, r.info.run_id)
        run.set_tags({"error_type": "stale", "error": "worker died; its Optuna trial was failed"})
        run.end(KILLED)
        ended += 1
    if ended:
        log.warning("ended %d stale RUNNING MLflow run(s) of study %s as KILLED", ended, study_name)
    return ended


def trial_runs(parent: tracking.Run, study_name: str, number: int) -> list[Run]:
    """The child runs logged for trial `number` of `study_name` (normally one)."""
    client: MlflowClient = parent.client
    exp_id = client.get_run(parent.id).info.experiment_id
    return client.search_runs(
        [exp_id], f"tags.study_name = {_quote(study_name)} and tags.trial_number = "
                  f"'{number}' and tags.run_role = 'child'", max_results=100,
    )


def finished_values(parent: tracking.Run, study_name: str, number: int,
                    metrics: Sequence[str]) -> dict[str, float] | None:
    """The values of `metrics` logged by trial `number`'s FINISHED run, if it has one with all
    of them: what the job returned before its sweep lost track of it (the job ends its run
    FINISHED only after logging every metric)."""
    for run in trial_runs(parent, study_name, number):
        logged = run.data.metrics
        if run.info.status == "FINISHED" and all(m in logged for m in metrics):
            return {m: float(logged[m]) for m in metrics}
    return None


def end_trial_runs(parent: tracking.Run, study_name: str, number: int, reason: str) -> int:
    """End trial `number`'s RUNNING runs as KILLED (its worker died or was interrupted before
    the run could end itself). Returns how many."""
    ended = 0
    for r in trial_runs(parent, study_name, number):
        if r.info.status == "RUNNING":
            run = tracking.Run(parent.client, r.info.run_id)
            run.set_tags({"error_type": "lost", "error": reason[:5000]})
            run.end(KILLED)
            ended += 1
    return ended
