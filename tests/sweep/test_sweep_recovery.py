"""Trials lost for no fault of their configuration, without training: a real Optuna journal
study, a real MLflow SQLite store and the sweeper's own bookkeeping (compression/sweep/)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from hydra.core.utils import JobReturn, JobStatus
from mlflow.exceptions import MlflowException
from optuna.trial import TrialState

from compression import tracking
from compression.core.errors import ConfigError
from compression.sweep import failures
from compression.sweep import study as st
from compression.sweep.sweeper import OptunaSweep, SweepFailedError


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _sweep(tmp_path: Path, **settings: object) -> tuple[OptunaSweep, optuna.Study]:
    """The sweeper as `setup` leaves it, on a journal study, with a real MLflow parent run."""
    sweep = OptunaSweep({"storage": str(tmp_path / "o.journal"), "study_name": "s",
                         "sampler": "random", "n_trials": 4, **settings})
    sweep.objectives = sweep.returned = ["val_accuracy"]
    sweep.constraints, sweep.lost_in_a_row, sweep.store_down = [], 0, False
    client = tracking.client_for(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = tracking.ensure_experiment(client, "compression")
    parent = client.create_run(exp, tags={"run_role": "parent", "study_name": "s"})
    sweep.parent = tracking.Run(client, parent.info.run_id)
    return sweep, st.open_study(sweep.cfg)


def _child(sweep: OptunaSweep, number: int, status: str, **metrics: float) -> str:
    client = sweep.parent.client
    exp = client.get_run(sweep.parent.id).info.experiment_id
    run = tracking.Run(client, client.create_run(exp, tags={
        "run_role": "child", "study_name": "s", "trial_number": str(number),
        tracking.PARENT_TAG: sweep.parent.id}).info.run_id)
    run.log_metrics(metrics)
    if status != "RUNNING":
        run.end(status)
    return run.id


def test_a_dead_workers_trial_whose_run_finished_is_completed_from_that_run(
        tmp_path: Path) -> None:
    """Killed after the run FINISHED, before Optuna heard: the resume takes the run's logged
    objective instead of running the trial again (which left two FINISHED runs of it)."""
    sweep, study = _sweep(tmp_path)
    done, lost = study.ask(), study.ask()
    for t in (done, lost):
        t.suggest_float("x", 0, 1)
        t.set_user_attr(st.WORKER_ATTR, f"{socket.gethostname()}:{_dead_pid()}")
    finished = _child(sweep, done.number, "FINISHED", val_accuracy=0.875)
    _child(sweep, lost.number, "RUNNING", val_accuracy=0.5)  # killed mid-run

    sweep._reap(study, sweep.parent, first=True)
    by_number = {t.number: t for t in study.trials}
    assert by_number[done.number].state == TrialState.COMPLETE
    assert by_number[done.number].value == 0.875
    assert by_number[lost.number].state == TrialState.FAIL
    assert st.counts(study).failed == 0  # a dead worker is not the configuration's failure
    [retry] = study.get_trials(states=(TrialState.WAITING,))
    assert retry.system_attrs["fixed_params"] == by_number[lost.number].params  # only that one
    runs = {r.data.tags["trial_number"]: r.info.status for r in
            sweep.parent.client.search_runs([sweep.parent.client.get_run(
                finished).info.experiment_id], "tags.run_role = 'child'")}
    assert runs == {str(done.number): "FINISHED", str(lost.number): "KILLED"}


@pytest.mark.parametrize("error", [
    tracking.StoreUnavailableError("tracking.uri=http://127.0.0.1:5000: no MLflow server "
                                   "answers at http://127.0.0.1:5000/health (refused)"),
    MlflowException("API request to http://127.0.0.1:5000/api/2.0/mlflow/runs/create failed "
                    "with exception HTTPConnectionPool(host='127.0.0.1', port=5000): Max "
                    "retries exceeded with url: /api/2.0/mlflow/runs/create"),
])
def test_a_trial_failed_by_the_tracking_store_is_queued_again_and_not_counted(
        tmp_path: Path, error: Exception) -> None:
    """A store outage used to count against max_failure_rate for ever: a resume after the
    outage stopped after one trial."""
    sweep, study = _sweep(tmp_path, max_failure_rate=0.0)
    trial = study.ask()
    trial.suggest_float("x", 0, 1)
    sweep._tell(study, trial, JobReturn(status=JobStatus.FAILED, _return_value=error))
    assert study.trials[0].state == TrialState.FAIL
    assert "attempt 1 of 3" in study.trials[0].user_attrs[st.INFRA_ATTR]
    assert st.counts(study).failed == 0
    sweep._check_failures(study, 4)  # max_failure_rate=0: one counted failure would stop it
    retry = study.ask()  # the same point, next attempt
    assert retry.suggest_float("x", 0, 1) == trial.params["x"]
    assert retry.user_attrs[st.ATTEMPT_ATTR] == 2


def test_a_configuration_failure_is_still_counted(tmp_path: Path) -> None:
    sweep, study = _sweep(tmp_path, max_failure_rate=0.0)
    trial = study.ask()
    sweep._tell(study, trial, JobReturn(status=JobStatus.FAILED, _return_value=ConfigError(
        "pruning.sparsity=1.5 is out of range")))
    assert st.counts(study).failed == 1 and not study.get_trials(states=(TrialState.WAITING,))
    assert not failures.is_infrastructure(ConfigError("pruning.sparsity=1.5 is out of range"))


def test_an_outage_that_lasts_stops_the_sweep_resumable_and_a_lost_cause_is_counted(
        tmp_path: Path) -> None:
    sweep, study = _sweep(tmp_path, max_attempts=2)
    down = JobReturn(status=JobStatus.FAILED, _return_value=tracking.StoreUnavailableError(
        "tracking.uri=http://x: no MLflow server answers"))
    first = study.ask()
    first.suggest_float("x", 0, 1)
    sweep._tell(study, first, down)
    second = study.ask()  # the retry, attempt 2 of 2: now counted, not queued
    second.suggest_float("x", 0, 1)
    sweep._tell(study, second, down)
    assert st.counts(study).failed == 1 and not study.get_trials(states=(TrialState.WAITING,))
    sweep.cfg.max_attempts = 10
    for _ in range(3):  # LOST_IN_A_ROW x n_jobs trials lost in a row: stop, resumable
        t = study.ask()
        t.suggest_float("x", 0, 1)
        sweep._tell(study, t, down)
    with pytest.raises(SweepFailedError, match=r"3 trial\(s\) in a row failed for no fault"):
        sweep._check_lost(study)
    [queued] = study.get_trials(states=(TrialState.WAITING,))  # queued for the resume
    assert queued.user_attrs[st.ATTEMPT_ATTR] == 4
