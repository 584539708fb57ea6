"""`hydra/launcher=submitit_local`: the code path of a SLURM cluster (submitit pickles each job
and runs it in a process of its own, as sbatch would on a node), end to end with the Optuna
sweeper, real training on digits, real Optuna journal and MLflow SQLite."""

from __future__ import annotations

from pathlib import Path

import pytest
from optuna.trial import TrialState
from test_sweep_cli import runs, sweep, trials


@pytest.mark.slow
def test_an_optuna_sweep_runs_its_trials_as_submitit_jobs(tmp_path: Path) -> None:
    out = sweep(tmp_path, "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10",
                "pruning=unstructured", "pruning.sparsity=0.3,0.6", "measure.latency=false",
                "hydra.sweeper.sampler=grid", "hydra.sweeper.n_trials=null",
                "hydra.sweeper.n_jobs=2", f"hydra.sweep.dir={tmp_path / 'multirun'}")
    assert out.returncode == 0, out.stderr[-3000:]
    done = [t for t in trials(tmp_path) if t.state == TrialState.COMPLETE]
    assert sorted(t.params["pruning.sparsity"] for t in done) == [0.3, 0.6]
    [parent] = [r for r in runs(tmp_path) if r.data.tags["run_role"] == "parent"]
    children = [r for r in runs(tmp_path) if r.data.tags["run_role"] == "child"]
    assert sorted(int(r.data.tags["trial_number"]) for r in children) == sorted(
        t.number for t in done)
    assert {r.info.status for r in children} == {"FINISHED"}
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    for t in done:  # the value Optuna holds is what the job logged
        [run] = [r for r in children if r.data.tags["trial_number"] == str(t.number)]
        assert t.value == run.data.metrics["val_accuracy"]
    assert list((tmp_path / "multirun" / ".submitit").iterdir())  # submitit ran the jobs
    assert (tmp_path / "multirun" / "optimization_results.yaml").exists()
