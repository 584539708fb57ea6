"""train.py as a user runs it: --help, one-line errors, multirun grouped under a parent run."""

from __future__ import annotations

import subprocess
import sys

from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient
from shrink import FAST

from compression.core.paths import PROJECT_ROOT


def _train(tmp_path, *args: str, flags: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "train.py", *flags, *FAST, f"paths.cache={tmp_path / 'cache'}",
           f"paths.artifacts={tmp_path / 'artifacts'}", f"hydra.run.dir={tmp_path / 'run'}",
           f"hydra.sweep.dir={tmp_path / 'multirun'}", *args]
    return subprocess.run(cmd, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)


def test_help_lists_groups_and_examples(tmp_path) -> None:
    out = _train(tmp_path, "--help")
    assert out.returncode == 0
    groups = dict(line.split(": ", 1) for line in out.stdout.splitlines()
                  if ": " in line and line.split(":")[0] in {"data", "pruning"})
    assert {"digits", "fashion_mnist"} <= set(groups["data"].split(", "))
    assert {"none", "unstructured"} <= set(groups["pruning"].split(", "))
    assert "python train.py pruning=unstructured pruning.sparsity=0.9" in out.stdout


def test_bad_value_exits_with_one_readable_line(tmp_path, tracking_uri) -> None:
    out = _train(tmp_path, f"tracking.uri={tracking_uri}", "pruning=unstructured",
                 "pruning.sparsity=1.5")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1] == (
        "error: pruning.sparsity=1.5 is out of range; allowed: [0, 1)"
    )
    assert "Traceback" not in out.stderr


def test_multirun_groups_one_run_per_job_under_a_parent(tmp_path, tracking_uri) -> None:
    out = _train(tmp_path, f"tracking.uri={tracking_uri}", "pruning=unstructured",
                 "pruning.sparsity=0.5,0.9", flags=("-m",))
    assert out.returncode == 0, out.stderr[-2000:]
    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name("compression")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("run_role") == "parent"]
    children = [r for r in runs if r.data.tags.get("run_role") == "child"]
    assert len(parents) == 1 and len(children) == 2
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    assert sorted(r.data.params["pruning.sparsity"] for r in children) == ["0.5", "0.9"]
    assert all(r.info.status == "FINISHED" for r in runs)


def test_a_bad_value_in_any_job_stops_a_multirun_before_the_first_job(tmp_path,
                                                                      tracking_uri) -> None:
    """Hydra's basic sweeper composes each job when it launches it: job #0 would train and be
    recorded before job #1's value was refused, leaving a FAILED parent."""
    out = _train(tmp_path, f"tracking.uri={tracking_uri}", "pruning=unstructured",
                 "pruning.sparsity=0.5,1.5", flags=("-m",))
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1] == (
        "error: job #1 (pruning.sparsity=1.5): pruning.sparsity=1.5 is out of range; "
        "allowed: [0, 1)")
    assert "Traceback" not in out.stderr
    assert MlflowClient(tracking_uri=tracking_uri).get_experiment_by_name("compression") is None
    assert not list((tmp_path / "multirun").glob("*/.hydra"))  # no job started


def test_unreachable_tracking_store_stops_a_multirun_in_one_line_before_any_job(tmp_path) -> None:
    """MLflow alone would retry the dead database for ~100 s in every job; Hydra would turn the
    parent run's failure into a warning and run the jobs anyway."""
    out = _train(tmp_path, "tracking.uri=postgresql://me:secret@127.0.0.1:1/mlflow",
                 "pruning=unstructured", "pruning.sparsity=0.5,0.9", flags=("-m",))
    assert out.returncode == 2
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error: tracking.uri=postgresql://me:***@127.0.0.1:1/mlflow: cannot "
                           "connect to the MLflow database:"), last
    assert "secret" not in out.stderr and "Traceback" not in out.stderr
    assert not list((tmp_path / "multirun").glob("*/.hydra"))  # no job started


def test_bad_sweeper_value_leaves_no_parent_run_behind(tmp_path, tracking_uri) -> None:
    """Hydra opens the multirun's MLflow parent run (a callback) before it builds the sweeper
    that rejects the value; the sweeper's settings are checked by the callback before that, so
    no parent run is opened at all (not even one deleted afterwards)."""
    out = _train(tmp_path, f"tracking.uri={tracking_uri}", "hydra/sweeper=optuna",
                 "hydra.sweeper.n_trials=0", flags=("-m",))
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith(
        "error: hydra.sweeper.n_trials=0 is out of range")
    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name("compression")
    assert exp is None or client.search_runs([exp.experiment_id], run_view_type=ViewType.ALL) == []
