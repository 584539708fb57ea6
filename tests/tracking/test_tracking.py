"""compression/tracking/: the quick reachability check in front of MLflow's slow retries."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from compression import tracking
from compression.core import job
from compression.core.errors import ConfigError
from compression.run import pipeline


@pytest.mark.parametrize("uri, message", [
    ("postgresql://u:pw@127.0.0.1:1/mlflow",
     "tracking.uri=postgresql://u:***@127.0.0.1:1/mlflow: cannot connect to the MLflow database"),
    ("http://127.0.0.1:1", "tracking.uri=http://127.0.0.1:1: no MLflow server answers"),
])
def test_a_dead_store_is_one_line_at_once(uri: str, message: str) -> None:
    t0 = time.perf_counter()
    with pytest.raises(ConfigError) as e:
        tracking.check_reachable(uri)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)
    assert time.perf_counter() - t0 < tracking.PROBE_TIMEOUT_S  # refused: no retries


def test_sqlite_needs_no_server(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}"
    tracking.check_reachable(uri)  # MLflow creates the file; nothing to check
    assert tracking.client_for(uri).tracking_uri == uri


def test_redact_hides_only_the_password() -> None:
    assert tracking.redact("postgresql://me:secret@db:5432/x") == "postgresql://me:***@db:5432/x"
    assert tracking.redact("postgresql://me@db/x") == "postgresql://me@db/x"


def test_flatten_keeps_mappings_with_pattern_keys_whole_so_mlflow_takes_the_names() -> None:
    params = tracking.flatten({"pruning": {"method": "unstructured",
                                           "overrides": {"fc3": 0, "conv*": 0.3},
                                           "include": ["*"], "empty": {}},
                               "model": {"kwargs": {"hidden": 32}}})
    assert params == {"pruning.method": "unstructured",
                      "pruning.overrides": "{'fc3': 0, 'conv*': 0.3}",
                      "pruning.include": "['*']", "pruning.empty": "{}",
                      "model.kwargs.hidden": "32"}
    assert all(tracking.PARAM_NAME.fullmatch(k) for k in params)


def test_a_run_with_pattern_overrides_logs_its_params(compose_cfg, tracking_uri) -> None:
    pipeline.run(compose_cfg("pruning=unstructured", "pruning.sparsity=0.9",
                             "pruning.overrides={fc3:0,fc*:0.3}", "measure.latency=false"))
    client = MlflowClient(tracking_uri=tracking_uri)
    [run] = client.search_runs([client.get_experiment_by_name("compression").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["pruning.overrides"] == "{'fc3': 0, 'fc*': 0.3}"


def _first_start(uri: str, barrier: Any, results: Any) -> None:
    barrier.wait()  # every process opens the new database at the same moment
    try:
        client = tracking.client_for(uri)
        tracking.ensure_experiment(client, "compression")
        results.put("ok")
    except Exception as e:
        results.put(f"{type(e).__name__}: {str(e).splitlines()[0]}")


def test_processes_that_start_on_a_new_sqlite_store_together_leave_it_working(
        tmp_path: Path) -> None:
    """MLflow builds a new database's schema with Alembic migrations; two processes doing it at
    once broke it for good (`table _alembic_tmp_... already exists`). Forked processes, so that
    they reach MLflow within milliseconds of each other."""
    ctx = multiprocessing.get_context("fork")
    for attempt in range(2):
        uri = f"sqlite:///{tmp_path / f'new{attempt}.db'}"
        barrier, results = ctx.Barrier(4), ctx.Queue()
        procs = [ctx.Process(target=_first_start, args=(uri, barrier, results))
                 for _ in range(4)]
        for p in procs:
            p.start()
        outcomes = [results.get(timeout=120) for _ in procs]
        for p in procs:
            p.join(timeout=60)
        assert outcomes == ["ok"] * 4, outcomes
        client = MlflowClient(tracking_uri=uri)  # a later process finds it whole
        assert [e.name for e in client.search_experiments()].count("compression") == 1


def test_a_multirun_job_without_a_parent_run_is_refused_not_logged_single(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A sweep whose parent run was lost logged its trials as lone `single` runs, invisible to
    the sweep's nesting, analysis and stale-run cleanup."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    from compression.config.run import CONFIG_DIR

    monkeypatch.delenv(job.PARENT_RUN_ID, raising=False)
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["hydra.mode=MULTIRUN"], return_hydra_config=True)
    GlobalHydra.instance().clear()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    HydraConfig.instance().set_config(cfg)
    try:
        with pytest.raises(ConfigError, match="this job of a multirun has no MLflow parent"):
            tracking.start_run(tracking.TrackingConfig(uri=uri))
    finally:
        HydraConfig.instance().cfg = None
    client = MlflowClient(tracking_uri=uri)
    assert not client.search_runs([tracking.ensure_experiment(client, "compression")])


def test_a_concurrent_insert_is_retried_and_other_errors_are_not() -> None:
    from mlflow.exceptions import MlflowException

    from compression.tracking import retry_concurrent_insert

    calls: list[int] = []

    def collides_once() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise MlflowException("(sqlite3.IntegrityError) UNIQUE constraint failed: "
                                  "datasets.experiment_id, datasets.name, datasets.digest")
        return "logged"

    assert retry_concurrent_insert(collides_once) == "logged" and len(calls) == 2

    def broken() -> None:
        calls.append(1)
        raise MlflowException("RESOURCE_DOES_NOT_EXIST: run 'x' not found")

    calls.clear()
    with pytest.raises(MlflowException, match="RESOURCE_DOES_NOT_EXIST"):
        retry_concurrent_insert(broken)
    assert len(calls) == 1
