"""Joblib workers started from a preloaded fork server (compression/sweep/workers.py)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
import sqlalchemy
from joblib import Parallel, delayed
from joblib.externals.loky.backend.context import get_start_method

from compression.core import job
from compression.sweep import workers


def worker_facts() -> dict[str, object]:
    """What a worker process looks like when its first job starts."""
    import sys

    return {"pid": os.getpid(), "ppid": os.getppid(),
            "preloaded": [m for m in workers.PRELOAD if m in sys.modules],
            "threads": [t.name for t in threading.enumerate()],
            "sweep": os.environ.get(job.SWEEP_PID)}


@pytest.mark.slow  # the fork server imports torch, MLflow and Hydra once: ~10-20 s
def test_workers_come_from_a_preloaded_fork_server_not_the_threaded_sweep(tmp_path: Path
                                                                           ) -> None:
    """The sweep runs a heartbeat thread and holds an open database connection while loky
    starts workers: they are forked by the single-threaded fork server, never by the sweep."""
    engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with engine.connect() as c:  # the pool now holds an open connection
        c.exec_driver_sql("create table t (x int)")
        c.commit()
    stop = threading.Event()
    beat = threading.Thread(target=stop.wait, name="sweep-heartbeat", daemon=True)
    beat.start()
    try:
        assert workers.fork_workers()
        assert get_start_method() == "forkserver"
        facts = Parallel(n_jobs=2, backend="loky")(delayed(worker_facts)() for _ in range(2))
    finally:
        stop.set()
        beat.join()
    for f in facts:
        assert f["ppid"] != os.getpid()  # not a fork of this (threaded) process
        assert f["preloaded"] == workers.PRELOAD  # imports done once, in the server
        assert "sweep-heartbeat" not in f["threads"]
        assert f["sweep"] == str(os.getpid())  # whom the worker's watcher watches
    with engine.connect() as c:  # the parent's pool is untouched
        c.exec_driver_sql("insert into t values (1)")
        assert c.exec_driver_sql("select x from t").scalar() == 1


def test_alive_sees_a_killed_unreaped_process_as_dead() -> None:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    import time

    deadline = time.monotonic() + 10
    while workers._alive(pid) and time.monotonic() < deadline:  # a zombie until reaped
        time.sleep(0.05)
    assert not workers._alive(pid)
    os.waitpid(pid, 0)
    assert not workers._alive(pid) and workers._alive(os.getpid())
