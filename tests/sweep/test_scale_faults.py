"""Scale and faults together: an `mlflow server` on PostgreSQL, Optuna on PostgreSQL, two sweep
processes with two joblib workers each sharing one study of 24 tiny trials; mid-sweep one worker
is SIGKILLed and the tracking server restarted; then the sweep is resumed. Nothing may be lost,
repeated or left RUNNING. Prints the counts (docs/reliability.md quotes them)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import optuna
import psutil
import pytest
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from test_sweep_cli import FAST, HERE

from compression.core.paths import PROJECT_ROOT

PG = "postgresql://postgres@127.0.0.1:5432"
N_TRIALS = 24


def _psql(sql: str) -> None:
    import psycopg

    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        conn.execute(sql)


@pytest.fixture
def databases() -> Iterator[tuple[str, str]]:
    """Two new PostgreSQL databases, unique to this test run: MLflow's and Optuna's."""
    tag = f"{os.getpid()}_{uuid.uuid4().hex[:8]}"
    names = [f"scale_mlflow_{tag}", f"scale_optuna_{tag}"]
    for name in names:
        _psql(f"CREATE DATABASE {name}")
    try:
        yield f"{PG}/{names[0]}", f"{PG}/{names[1]}"
    finally:
        for name in names:
            _psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`mlflow server` on 127.0.0.1:port, stopped and started again on the same port."""

    def __init__(self, backend: str, artifacts: Path, log: Path) -> None:
        self.port, self.backend, self.artifacts, self.log = _free_port(), backend, artifacts, log
        self.proc: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log.open("a") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port",
                 str(self.port), "--backend-store-uri", self.backend, "--workers", "1",
                 "--default-artifact-root", self.artifacts.as_uri(), "--no-serve-artifacts"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{self.uri}/health", timeout=2).close()
                return
            except OSError:
                assert self.proc.poll() is None, self.log.read_text()[-3000:]
                assert time.monotonic() < deadline, "mlflow server did not start"
                time.sleep(0.5)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)  # the server and its uvicorn workers
            self.proc.wait(timeout=60)


def _sweep(tmp: Path, server: Server, storage: str, name: str) -> subprocess.Popen:
    cmd = [sys.executable, "train.py", "-m", "hydra/sweeper=optuna", *FAST,
           "model=custom", "pruning=unstructured", "pruning.sparsity=interval(0.1,0.95)",
           "quantization=none,dynamic_int8", "measure.latency=false",
           "tracking.log_model=false", f"tracking.uri={server.uri}",
           f"paths.cache={tmp / 'cache'}", f"paths.artifacts={tmp / 'artifacts'}",
           f"hydra.sweeper.storage={storage}", "hydra.sweeper.study_name=scale",
           "hydra.sweeper.sampler=random", f"hydra.sweeper.n_trials={N_TRIALS}",
           "hydra.sweeper.seed=0", "hydra.sweeper.n_jobs=2", "hydra/launcher=joblib",
           "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={tmp / name}"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(PROJECT_ROOT)])}
    log = (tmp / f"{name}.log").open("w")
    return subprocess.Popen(cmd, cwd=PROJECT_ROOT, env=env, text=True, stdout=log,
                            stderr=subprocess.STDOUT)


def _complete(storage: str) -> int:
    try:
        study = optuna.load_study(study_name="scale", storage=storage)
    except KeyError:
        return 0
    return sum(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False))


def _workers(proc: subprocess.Popen) -> list[psutil.Process]:
    """The sweep's live joblib workers: the children of its fork server (sweep/workers.py),
    which is the sweep's own child; zombies and processes that just ended are skipped."""
    found = []
    for c in psutil.Process(proc.pid).children(recursive=True):
        try:
            parent = c.parent()
            if (parent is not None and parent.pid != proc.pid
                    and "forkserver" in " ".join(parent.cmdline())
                    and c.status() != psutil.STATUS_ZOMBIE):
                found.append(c)
        except psutil.Error:  # ended meanwhile
            continue
    return found


@pytest.mark.slow
def test_two_sweeps_a_dead_worker_and_a_server_restart_lose_and_repeat_nothing(
        tmp_path: Path, databases: tuple[str, str]) -> None:
    mlflow_db, storage = databases
    server = Server(mlflow_db, tmp_path / "mlartifacts", tmp_path / "server.log")
    server.start()
    t0 = time.monotonic()
    try:
        procs = [_sweep(tmp_path, server, storage, f"p{i}") for i in range(2)]
        # mid-sweep: a quarter of the trials done, SIGKILL one worker of the first process
        deadline = time.monotonic() + 400
        while _complete(storage) < N_TRIALS // 4 or not _workers(procs[0]):
            assert all(p.poll() is None for p in procs), "a sweep ended early"
            assert time.monotonic() < deadline, "the sweep makes no progress"
            time.sleep(0.5)
        victim = _workers(procs[0])[0]
        victim.kill()
        killed_at = _complete(storage)
        server.stop()  # ... and an outage of the tracking server while trials run
        time.sleep(5)
        server.start()
        codes = [p.wait(timeout=600) for p in procs]
        logs = [(tmp_path / f"p{i}.log").read_text() for i in range(2)]
        assert codes == [0, 0], logs[0][-3000:] + logs[1][-3000:]
        resumed = _sweep(tmp_path, server, storage, "resume")  # then the sweep is resumed
        assert resumed.wait(timeout=600) == 0, (tmp_path / "resume.log").read_text()[-3000:]
        wall = time.monotonic() - t0

        study = optuna.load_study(study_name="scale", storage=storage)
        trials = study.get_trials(deepcopy=False)
        states = Counter(t.state.name for t in trials)
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        client = MlflowClient(tracking_uri=server.uri)
        exp = client.get_experiment_by_name("compression")
        runs = client.search_runs([exp.experiment_id], max_results=1000)
        deleted = client.search_runs([exp.experiment_id], max_results=1000,
                                     run_view_type=ViewType.DELETED_ONLY)
        children = [r for r in runs if r.data.tags.get("run_role") == "child"]
        parents = [r for r in runs if r.data.tags.get("run_role") == "parent"]
        run_states = Counter(r.info.status for r in children)
        print(f"\nscale test: {len(trials)} trials {dict(states)}; {len(children)} child runs "
              f"{dict(run_states)}; {len(parents)} parent run(s) ({len(deleted)} adopted and "
              f"deleted); worker {victim.pid} killed at {killed_at} complete; "
              f"wall {wall:.0f} s")

        # Optuna: every trial COMPLETE exactly once, nothing RUNNING
        assert len(complete) == N_TRIALS
        assert len({tuple(sorted(t.params.items())) for t in complete}) == N_TRIALS
        assert states.get("RUNNING", 0) == 0
        assert any("infra_error" in t.user_attrs for t in trials)  # the killed worker's trial
        # MLflow: exactly one FINISHED child per complete trial, none for the others
        finished = Counter(int(r.data.tags["trial_number"]) for r in children
                           if r.info.status == "FINISHED")
        assert finished == Counter(t.number for t in complete)
        assert "RUNNING" not in {r.info.status for r in runs}
        assert "single" not in {r.data.tags.get("run_role") for r in runs}
        # each process's runs under its parent: the study's one parent run, adopted by all
        [parent] = parents
        assert parent.data.tags["study_name"] == "scale"
        assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
        assert len({t.user_attrs["worker"] for t in complete}) >= 2  # both processes ran
        # results files of every process
        for name in ("p0", "p1", "resume"):
            files = {p.name for p in (tmp_path / name).iterdir()}
            assert {"optimization_results.yaml", "pareto.csv", "trials.csv"} <= files, name
    finally:
        for p in locals().get("procs", []):
            if p.poll() is None:
                p.kill()
        server.stop()
