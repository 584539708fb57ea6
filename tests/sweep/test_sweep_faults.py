"""Faults around a sweep, end to end (`python train.py -m ...` in subprocesses, real training on
digits, real Optuna journal and MLflow SQLite): a dead joblib worker, SIGTERM, processes that
start on a new MLflow database together, a parent run that cannot be opened."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from test_sweep_cli import FAST, HERE, runs, sweep, trials

from compression.core.paths import PROJECT_ROOT
from compression.sweep import study as st


def _one_finished_child_per_complete_trial(tmp: Path) -> list:
    done = [t for t in trials(tmp) if t.state == TrialState.COMPLETE]
    children = [r for r in runs(tmp) if r.data.tags["run_role"] == "child"]
    finished = sorted(int(r.data.tags["trial_number"]) for r in children
                      if r.info.status == "FINISHED")
    assert finished == sorted(t.number for t in done)
    assert "RUNNING" not in {r.info.status for r in runs(tmp)}
    assert TrialState.RUNNING not in {t.state for t in trials(tmp)}
    return children


@pytest.mark.slow
def test_a_killed_joblib_worker_fails_its_trial_and_the_sweep_goes_on(tmp_path: Path) -> None:
    """`kill -9` of one worker used to end the sweep with TerminatedWorkerError, trials and
    runs left RUNNING, no results files. Here the worker SIGKILLs itself in its first trial."""
    out = sweep(tmp_path, "model=custom", "model._target_=sweep_factories.kill_once",
                f"+model.marker={tmp_path / 'killed'}", "pruning=unstructured",
                "pruning.sparsity=0.3,0.6", "hydra.sweeper.sampler=grid",
                "hydra.sweeper.n_trials=null", "hydra/launcher=joblib",
                "hydra.launcher.n_jobs=2", "hydra.sweeper.n_jobs=2",
                f"hydra.sweep.dir={tmp_path / 'multirun'}")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "TerminatedWorkerError" not in out.stderr and "Traceback" not in out.stderr
    states = [t.state for t in trials(tmp_path)]
    assert states.count(TrialState.COMPLETE) == 2
    lost = [t for t in trials(tmp_path) if t.state == TrialState.FAIL]
    assert lost and all(st.INFRA_ATTR in t.user_attrs for t in lost)  # not counted
    children = _one_finished_child_per_complete_trial(tmp_path)
    assert "KILLED" in {r.info.status for r in children}  # the dead worker's run
    assert (tmp_path / "multirun" / "optimization_results.yaml").exists()


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["basic", "joblib"])
def test_sigterm_ends_a_sweep_as_ctrl_c_does(tmp_path: Path, launcher: str) -> None:
    """SIGTERM gave exit 130 with a traceback; now: one line, runs KILLED, the trial queued."""
    marker = tmp_path / "worker.pid"
    extra = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"] if launcher == "joblib" else []
    proc = sweep(tmp_path, "model=custom", "model._target_=sweep_factories.hangs",
                 f"+model.marker={marker}", "pruning=unstructured", "pruning.sparsity=0.5",
                 "hydra.sweeper.n_trials=1", *extra, wait=False)
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert proc.poll() is None and time.monotonic() < deadline, "no trial started"
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    [line] = [x for x in output.splitlines() if x.startswith("error:")]
    assert line.startswith("error: interrupted (SIGTERM)")
    statuses = {r.data.tags["run_role"]: r.info.status for r in runs(tmp_path)}
    assert statuses == {"parent": "KILLED", "child": "KILLED"}
    [trial] = [t for t in trials(tmp_path) if t.state != TrialState.WAITING]
    assert trial.state == TrialState.FAIL and st.INFRA_ATTR in trial.user_attrs
    [queued] = [t for t in trials(tmp_path) if t.state == TrialState.WAITING]  # resumable
    assert queued.system_attrs["fixed_params"] == trial.params


def _train(db: str, *args: str) -> subprocess.Popen:
    import os
    import sys

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(PROJECT_ROOT)])}
    return subprocess.Popen(
        [sys.executable, "train.py", "-m", *FAST, f"tracking.uri=sqlite:///{db}", *args],
        cwd=PROJECT_ROOT, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


@pytest.mark.slow
def test_sweeps_started_together_on_a_new_mlflow_database(tmp_path: Path) -> None:
    """Two processes creating one new SQLite store broke it for good, or lost the parent run
    of one sweep so that its trials were logged as lone `single` runs."""
    db = tmp_path / "new.db"
    common = [f"paths.cache={tmp_path / 'cache'}", f"paths.artifacts={tmp_path / 'a'}",
              "pruning=unstructured", "measure.latency=false", "tracking.log_model=false"]
    procs = [
        _train(str(db), *common, "pruning.sparsity=0.3,0.5",
               f"hydra.sweep.dir={tmp_path / 'basic'}"),
        _train(str(db), *common, "hydra/sweeper=optuna", "pruning.sparsity=0.3,0.5",
               "hydra.sweeper.sampler=grid", "hydra.sweeper.n_trials=null",
               f"hydra.sweeper.storage={tmp_path / 'o.journal'}",
               f"hydra.sweep.dir={tmp_path / 'optuna'}"),
    ]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs[0][-2000:] + logs[1][-2000:]
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    exp = client.get_experiment_by_name("compression")
    all_runs = client.search_runs([exp.experiment_id], max_results=100)
    roles = sorted(r.data.tags["run_role"] for r in all_runs)
    assert roles == ["child"] * 4 + ["parent"] * 2
    parents = {r.info.run_id for r in all_runs if r.data.tags["run_role"] == "parent"}
    assert {r.data.tags["mlflow.parentRunId"] for r in all_runs
            if r.data.tags["run_role"] == "child"} == parents
    assert {r.info.status for r in all_runs} == {"FINISHED"}


def test_a_parent_run_that_cannot_be_opened_stops_the_sweep_in_one_line(
        tmp_path: Path) -> None:
    """Hydra turns a callback's exception into a warning and ran every job anyway, each logged
    as a lone run (or failing with a traceback). A deleted experiment refuses new runs."""
    db = tmp_path / "mlflow.db"
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    client.delete_experiment(client.create_experiment("gone"))
    proc = _train(str(db), "tracking.experiment=gone", "pruning=unstructured",
                  "pruning.sparsity=0.3,0.5", f"hydra.sweep.dir={tmp_path / 'm'}",
                  f"paths.cache={tmp_path / 'cache'}")
    output = proc.communicate(timeout=300)[0]
    assert proc.returncode == 2, output[-3000:]
    assert "Traceback" not in output
    [line] = [x for x in output.splitlines() if x.startswith("error:")]
    assert "cannot open the sweep's MLflow parent run" in line
    assert not client.search_runs([client.get_experiment_by_name("gone").experiment_id])
