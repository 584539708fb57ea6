"""`python train.py -m hydra/sweeper=optuna ...` end to end: real training on digits, real
Optuna journal storage, real MLflow (SQLite). Each run takes 15-60 s on 2 busy cores: slow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import psutil
import pytest
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from optuna.trial import TrialState

from compression.core.paths import PROJECT_ROOT

FAST = ["train.epochs=3", "finetune.epochs=1", "measure.repeats=5", "measure.warmup=1",
        "measure.batch_size=16"]
HERE = Path(__file__).parent


def sweep(tmp: Path, *args: str, study: str = "s", wait: bool = True
          ) -> subprocess.CompletedProcess | subprocess.Popen:
    cmd = [sys.executable, "train.py", "-m", "hydra/sweeper=optuna", *FAST,
           f"tracking.uri=sqlite:///{tmp / 'mlflow.db'}", f"paths.cache={tmp / 'cache'}",
           f"paths.artifacts={tmp / 'artifacts'}", f"hydra.sweeper.storage={tmp / 'o.journal'}",
           f"hydra.sweeper.study_name={study}", "hydra.sweeper.seed=0", *args]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(PROJECT_ROOT)])}
    kw = {"cwd": PROJECT_ROOT, "env": env, "text": True}
    if not wait:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kw)
    return subprocess.run(cmd, capture_output=True, timeout=600, **kw)


def runs(tmp: Path, deleted: bool = False) -> list:
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}")
    exp = client.get_experiment_by_name("compression")
    return client.search_runs([exp.experiment_id], max_results=1000,
                              run_view_type=ViewType.ALL if deleted else ViewType.ACTIVE_ONLY)


def trials(tmp: Path, study: str = "s") -> list[optuna.trial.FrozenTrial]:
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp / "o.journal")))
    return optuna.load_study(study_name=study, storage=storage).trials


def _pareto(points: dict[int, tuple[float, float]]) -> set[int]:
    """Non-dominated trials for (maximize, minimize)."""
    return {n for n, (a, s) in points.items()
            if not any(a2 >= a and s2 <= s and (a2, s2) != (a, s) for a2, s2 in points.values())}


@pytest.mark.slow
def test_constrained_multi_objective_sweep_with_a_failing_trial(tmp_path: Path) -> None:
    out = sweep(
        tmp_path, "model=custom", "objectives=[val_accuracy,size_bytes]", "pruning=unstructured",
        "hydra.sweeper.sampler=grid", "hydra.sweeper.n_trials=null",
        "hydra.sweeper.directions=[maximize,minimize]", "hydra.sweeper.max_failure_rate=0.5",
        "+hydra.sweeper.constraints.accuracy_drop=0.05",
        "+hydra.sweeper.when={pruning.sparsity: {model._target_: "
        "[compression.models.build.example_user_model]}}",
        "model._target_=compression.models.build.example_user_model,sweep_factories.exploding",
        "pruning.sparsity=0.3,0.6,0.99", f"hydra.sweep.dir={tmp_path / 'multirun'}",
    )
    assert out.returncode == 0, out.stderr[-3000:]

    # Optuna: 3 complete, the exploding one FAIL with its error
    by_state = {s: [t for t in trials(tmp_path) if t.state == s] for s in TrialState}
    assert len(by_state[TrialState.COMPLETE]) == 3
    [failed] = by_state[TrialState.FAIL]
    assert "boom" in failed.user_attrs["error"]

    # MLflow: one parent; the failed trial's run is FAILED with the error; tags name the trial
    all_runs = runs(tmp_path)
    [parent] = [r for r in all_runs if r.data.tags["run_role"] == "parent"]
    children = {int(r.data.tags["trial_number"]): r for r in all_runs
                if r.data.tags["run_role"] == "child"}
    assert parent.data.tags["study_name"] == "s" and parent.data.tags["sampler"] == "grid"
    assert parent.info.run_name == "s"  # named by its study
    assert children[failed.number].info.status == "FAILED"
    assert "boom" in children[failed.number].data.tags["error"]
    assert {r.data.tags["study_name"] for r in children.values()} == {"s"}

    # The results file holds the Pareto set of the feasible trials, recomputed from MLflow
    m = {n: r.data.metrics for n, r in children.items() if r.info.status == "FINISHED"}
    feasible = {n: (x["val_accuracy"], x["size_bytes"]) for n, x in m.items()
                if x["accuracy_drop"] <= 0.05}
    assert len(feasible) < len(m)  # 99% sparsity breaks the 5-point budget
    doc = OmegaConf.load(tmp_path / "multirun" / "optimization_results.yaml")
    assert {s.trial_number for s in doc.solutions} == _pareto(feasible)
    for s in doc.solutions:
        assert list(s["values"]) == [m[s.trial_number]["val_accuracy"],
                                     m[s.trial_number]["size_bytes"]]
    assert (tmp_path / "multirun" / "pareto.csv").exists()


@pytest.mark.slow
@pytest.mark.parametrize("fork", [True, False])
def test_rejected_value_fails_its_trial_in_a_joblib_worker_and_the_sweep_goes_on(
        tmp_path: Path, fork: bool) -> None:
    """The job validates its own config: a sampled value the config rejects is that trial's
    FAIL with the one-line error (no MLflow run opened), not the end of the sweep or a worker.
    Workers are forked from the sweep (its imports done) or, with fork_workers=false, fresh."""
    record = tmp_path / "starts.jsonl"
    out = sweep(tmp_path, "model=custom", "model._target_=sweep_factories.records_start",
                f"+model.record={record}", "pruning=unstructured", "pruning.sparsity=0.5,1.5",
                "hydra.sweeper.sampler=grid", "hydra.sweeper.n_trials=null",
                "hydra.sweeper.max_failure_rate=0.5", "hydra/launcher=joblib",
                "hydra.launcher.n_jobs=2", "hydra.sweeper.n_jobs=2",
                f"hydra.sweeper.fork_workers={str(fork).lower()}",
                f"hydra.sweep.dir={tmp_path / 'multirun'}")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "start method should not be used" not in out.stderr  # loky's warning, expected
    by_state = {s: [t for t in trials(tmp_path) if t.state == s] for s in TrialState}
    [done], [failed] = by_state[TrialState.COMPLETE], by_state[TrialState.FAIL]
    assert done.params["pruning.sparsity"] == 0.5
    assert failed.user_attrs["error"].startswith("ConfigError: pruning.sparsity")
    children = [r for r in runs(tmp_path) if r.data.tags["run_role"] == "child"]
    assert [(r.data.tags["trial_number"], r.info.status) for r in children] == [
        (str(done.number), "FINISHED")]
    # only the good trial's job built models (the rejected one failed before): the first
    # was built before the job trained anything
    starts = [json.loads(line) for line in record.read_text().splitlines()]
    assert len({s["pid"] for s in starts}) == 1
    assert starts[0]["dynamo"] is fork


@pytest.mark.slow
def test_sweep_killed_with_sigkill_resumes_to_exactly_n_trials(tmp_path: Path) -> None:
    args = ["model=custom", "model._target_=sweep_factories.kill_once",
            f"+model.marker={tmp_path / 'killed'}", "pruning=unstructured",
            "hydra.sweeper.sampler=random", "hydra.sweeper.n_trials=3",
            "pruning.sparsity=interval(0.3,0.9)"]
    first = sweep(tmp_path, *args)
    assert first.returncode == -9  # SIGKILL in the first trial, its MLflow run left RUNNING
    assert [r.info.status for r in runs(tmp_path) if r.data.tags["run_role"] == "child"] == [
        "RUNNING"]
    killed = trials(tmp_path)[0]

    again = sweep(tmp_path, *args)
    assert again.returncode == 0, again.stderr[-3000:]
    states = [t.state for t in trials(tmp_path)]
    assert states.count(TrialState.COMPLETE) == 3 and TrialState.RUNNING not in states
    retried = [t for t in trials(tmp_path) if t.state == TrialState.COMPLETE
               and t.params == killed.params]
    assert len(retried) == 1  # the killed point was run again: nothing skipped
    statuses = sorted(r.info.status for r in runs(tmp_path))
    assert "RUNNING" not in statuses
    assert statuses.count("KILLED") == 1 and statuses.count("FINISHED") == 4  # 3 + parent
    parents = [r for r in runs(tmp_path) if r.data.tags["run_role"] == "parent"]
    assert len(parents) == 1  # the resumed sweep continued under the study's parent run
    # the resumed sweep's own parent was deleted once it adopted the study's: not left RUNNING
    [(status, stage)] = [(r.info.status, r.info.lifecycle_stage)
                         for r in runs(tmp_path, deleted=True) if r.info.run_id not in
                         {x.info.run_id for x in runs(tmp_path)}]
    assert (status, stage) == ("FINISHED", "deleted")


@pytest.mark.slow
def test_too_many_failed_trials_stop_the_sweep_in_one_line(tmp_path: Path) -> None:
    out = sweep(tmp_path, "pruning=unstructured", "pruning.sparsity=1.5,1.2",
                "hydra.sweeper.sampler=grid", "hydra.sweeper.n_trials=null",
                "hydra.sweeper.max_failure_rate=0")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    [line] = [x for x in out.stderr.splitlines() if x.startswith("error:")]
    assert line.startswith("error: study s: 1 failed trial(s) exceed max_failure_rate=0 x "
                           "n_trials=2 (raise it to go on); last error, trial 0: ConfigError: "
                           "pruning.sparsity=1.5 is out of range"), line
    [parent] = runs(tmp_path)
    assert parent.info.status == "FAILED" and "exceed" in parent.data.tags["error"]
    sweep_dir = Path(parent.data.tags["sweep_dir"])
    assert {"optimization_results.yaml", "pareto.csv", "trials.csv"} <= {
        p.name for p in sweep_dir.iterdir()}  # the results so far are written all the same


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.slow
@pytest.mark.parametrize("fork", ["true", "false"])
def test_workers_die_with_a_killed_sweep_and_their_runs_end_killed(
        tmp_path: Path, fork: str) -> None:
    """Without this a SIGKILLed sweep's workers, forked or fresh, would finish their trials
    unseen, and their MLflow runs would end FINISHED for trials the resumed study runs again."""
    marker = tmp_path / "worker.pid"
    proc = sweep(tmp_path, "model=custom", "model._target_=sweep_factories.hangs",
                 f"+model.marker={marker}", "pruning=unstructured", "pruning.sparsity=0.5",
                 "hydra.sweeper.n_trials=1", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                 f"hydra.sweeper.fork_workers={fork}", wait=False)
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert proc.poll() is None and time.monotonic() < deadline, "no trial started"
        time.sleep(0.2)
    worker = int(marker.read_text())
    proc.kill()
    proc.wait()
    psutil.wait_procs([psutil.Process(worker)], timeout=60) if _running(worker) else None
    assert not _running(worker)
    [child] = [r for r in runs(tmp_path) if r.data.tags["run_role"] == "child"]
    assert child.info.status == "KILLED"


@pytest.mark.slow
def test_a_study_resumed_with_other_choices_stops_before_touching_it(tmp_path: Path) -> None:
    grid = ["hydra.sweeper.sampler=grid", "hydra.sweeper.n_trials=null", "pruning=unstructured",
            "measure.latency=false"]
    first = sweep(tmp_path, *grid, "quantization=none,dynamic_int8")
    assert first.returncode == 0, first.stderr[-3000:]
    again = sweep(tmp_path, *grid, "quantization=none,dynamic_int8,fp16")
    assert again.returncode == 2
    [line] = [x for x in again.stderr.splitlines() if x.startswith("error:")]
    assert "study 's' was run with quantization: choice(none, dynamic_int8)" in line
    assert [t.state for t in trials(tmp_path)] == [TrialState.COMPLETE] * 2  # nothing queued
    [parent] = [r for r in runs(tmp_path) if r.data.tags["run_role"] == "parent"]
    assert parent.info.status == "FINISHED"  # the study's parent is left as it was


@pytest.mark.slow
def test_two_processes_share_one_study(tmp_path: Path) -> None:
    args = ["pruning=unstructured", "pruning.sparsity=interval(0.3,0.95)",
            "quantization=none,dynamic_int8", "hydra.sweeper.n_trials=4",
            "measure.latency=false", "tracking.log_model=false"]
    sweep(tmp_path, "hydra.sweeper.n_trials=1", *args[:2])  # creates study, cache, databases
    procs = [sweep(tmp_path, *args, wait=False) for _ in range(2)]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs[0][-2000:] + logs[1][-2000:]
    done = [t for t in trials(tmp_path) if t.state == TrialState.COMPLETE]
    assert len(done) == 4
    workers = {t.user_attrs["worker"] for t in done[1:]}
    assert len(workers) == 2  # both processes ran trials of the study
    assert len({tuple(sorted(t.params.items())) for t in done}) == 4  # none repeated
    children = [r for r in runs(tmp_path) if r.data.tags["run_role"] == "child"]
    assert sorted(int(r.data.tags["trial_number"]) for r in children) == [t.number for t in done]
    assert len({r.data.tags["mlflow.parentRunId"] for r in children}) == 1


@pytest.mark.slow
def test_presets_run_today_with_the_methods_that_exist(tmp_path: Path) -> None:
    curve = sweep(tmp_path, "sweep=sparsity_curve", "pruning=unstructured",
                  "pruning.sparsity=0.5,0.9", "seed=0", study="curve")
    assert curve.returncode == 0, curve.stderr[-3000:]
    pareto = sweep(tmp_path, "sweep=pareto", "pruning=unstructured",
                   "quantization=none,dynamic_int8", "hydra.sweeper.n_trials=2", study="pareto")
    assert pareto.returncode == 0, pareto.stderr[-3000:]
    assert [t.state for t in trials(tmp_path, "curve")] == [TrialState.COMPLETE] * 2
    assert [t.state for t in trials(tmp_path, "pareto")] == [TrialState.COMPLETE] * 2
    parents = {r.data.tags["study_name"]: r for r in runs(tmp_path)
               if r.data.tags["run_role"] == "parent"}
    assert parents["pareto"].data.tags["directions"] == "maximize,minimize,minimize"
