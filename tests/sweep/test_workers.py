"""Joblib workers forked from the sweep process (compression/sweep/workers.py)."""

from __future__ import annotations

import os
from pathlib import Path

import sqlalchemy

from compression.sweep import workers


def test_a_forked_worker_opens_its_own_connections_and_leaves_the_parents_alone(
        tmp_path: Path) -> None:
    engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with engine.connect() as c:  # the pool now holds an open connection
        c.exec_driver_sql("create table t (x int)")
        c.commit()
    inherited = engine.pool
    assert workers.fork_workers()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the worker: a new pool, the inherited one kept alive, and it works
        try:
            ok = engine.pool is not inherited and any(p is inherited for p in workers._inherited)
            with engine.connect() as c:
                c.exec_driver_sql("insert into t values (1)")
                c.commit()
            os.write(write, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 1) == b"1"
    assert engine.pool is inherited  # the sweep process keeps its pool and connection
    with engine.connect() as c:
        assert c.exec_driver_sql("select x from t").scalar() == 1
