"""compression/core/redaction.py: no password in URLs reaches MLflow params or tags, log lines,
or the files Hydra and the sweeper write."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from shrink import FAST

from compression import tracking
from compression.core import job, redaction
from compression.core.paths import PROJECT_ROOT
from compression.core.redaction import RedactHydraFiles, redact
from compression.sweep import study
from compression.tracking.callbacks import MlflowParentRun

PW = "Pa55w0rdXYZ"


@pytest.mark.parametrize(("text", "clean"), [
    (f"postgresql://postgres:{PW}@127.0.0.1:5432/db", "postgresql://postgres:***@127.0.0.1:5432/db"),
    (f"postgresql+psycopg2://u:{PW}@h/db?sslmode=require",
     "postgresql+psycopg2://u:***@h/db?sslmode=require"),
    (f"http://admin:{PW}@mlflow-host:5000", "http://admin:***@mlflow-host:5000"),
    (f"https://u:{PW}@h/path", "https://u:***@h/path"),
    (f"postgresql://u:p@{PW}@h/db", "postgresql://u:***@h/db"),  # a raw '@' in the password
    (f"postgresql://postgres@h/db?password={PW}&sslmode=require",
     "postgresql://postgres@h/db?password=***&sslmode=require"),
    (f"mysql://h/db?user=u&pwd={PW}", "mysql://h/db?user=u&pwd=***"),
    (f"host=h user=u password={PW} dbname=x", "host=h user=u password=*** dbname=x"),
    # an override list, as Hydra writes it (':' escaped) and as it is logged
    (f"- tracking.uri=postgresql\\://postgres\\:{PW}@127.0.0.1\\:5432/ml",
     "- tracking.uri=postgresql\\://postgres\\:***@127.0.0.1\\:5432/ml"),
    (f"a=1 tracking.uri=mysql://u:{PW}@h/d hydra.sweeper.storage='sqlite:///x?password={PW}'",
     "a=1 tracking.uri=mysql://u:***@h/d hydra.sweeper.storage='sqlite:///x?password=***'"),
    # nothing to hide
    ("postgresql://postgres@127.0.0.1/db", "postgresql://postgres@127.0.0.1/db"),
    ("sqlite:////tmp/a@b/mlflow.db", "sqlite:////tmp/a@b/mlflow.db"),
    ("pruning.sparsity=0.5 user@example.com", "pruning.sparsity=0.5 user@example.com"),
    ("postgresql://u:***@h/db", "postgresql://u:***@h/db"),
])
def test_redact(text: str, clean: str) -> None:
    assert redact(text) == clean
    assert redact(redact(text)) == clean


def test_one_redaction_function_everywhere() -> None:
    assert tracking.redact is redaction.redact and study.redact is redaction.redact


def test_log_records_are_redacted_whoever_logs_them() -> None:
    redaction.install_log_redaction()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger(f"test-redaction-{uuid.uuid4().hex}")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.info("#0 : tracking.uri=%s", f"postgresql://u:{PW}@h/db")
    try:
        raise RuntimeError(f"cannot connect to http://u:{PW}@h:5000")
    except RuntimeError:
        logger.exception("failed")
    text = stream.getvalue()
    assert PW not in text
    assert "postgresql://u:***@h/db" in text and "http://u:***@h:5000" in text


def test_the_callback_redacts_the_files_hydra_wrote(tmp_path: Path) -> None:
    job = tmp_path / "sweep" / "0"
    (job / ".hydra").mkdir(parents=True)
    escaped = f"tracking.uri=postgresql\\://postgres\\:{PW}@127.0.0.1\\:5432/ml"
    (job / ".hydra" / "overrides.yaml").write_text(f"- {escaped}\n")
    (job / ".hydra" / "config.yaml").write_text(f"tracking:\n  uri: postgresql://p:{PW}@h/m\n")
    (job / ".hydra" / "hydra.yaml").write_text(
        f"hydra:\n  sweeper:\n    storage: postgresql://p@h/o?password={PW}\n")
    (tmp_path / "sweep" / "multirun.yaml").write_text(f"task:\n- {escaped}\n")
    config = OmegaConf.create({"hydra": {"runtime": {"output_dir": str(job)},
                                         "output_subdir": ".hydra",
                                         "sweep": {"dir": str(tmp_path / "sweep")}}})
    RedactHydraFiles().on_job_start(config)
    files = [*job.glob(".hydra/*.yaml"), tmp_path / "sweep" / "multirun.yaml"]
    assert len(files) == 4
    for f in files:
        assert PW not in f.read_text() and "***" in f.read_text(), f


def test_parent_run_tags_and_run_params_are_redacted(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv(job.PARENT_RUN_ID, raising=False)
    monkeypatch.setattr(MlflowParentRun, "active", None)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = OmegaConf.create({
        "tracking": {"uri": uri},
        "hydra": {"overrides": {"task": [f"tracking.uri=postgresql://u:{PW}@h/db", "seed=1"]},
                  "sweep": {"dir": str(tmp_path)}},
    })
    cb = MlflowParentRun()
    cb.on_multirun_start(config)
    assert cb.run is not None
    parent = cb.run
    parent.set_tags({"search_space_fixed": f"tracking.uri=postgresql://u:{PW}@h/db",
                     "storage": f"postgresql://p@h/o?password={PW}"})
    parent.log_params({"data.root": f"https://u:{PW}@h/data"})
    cb.on_multirun_end(config)
    run = MlflowClient(uri).get_run(parent.id)
    assert run.data.tags["sweep_overrides"] == "tracking.uri=postgresql://u:***@h/db seed=1"
    assert run.data.tags["storage"] == "postgresql://p@h/o?password=***"
    assert PW not in str(run.data.tags) and PW not in str(run.data.params)


def _pg(sql: str) -> None:
    import psycopg

    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as c:
        c.execute(sql)


@pytest.mark.slow
def test_no_password_in_any_file_or_mlflow_row_after_an_optuna_multirun(tmp_path: Path) -> None:
    """A password in tracking.uri (user:password@) and in hydra.sweeper.storage (?password=),
    both PostgreSQL (trust auth here takes any password): after a 2-trial Optuna sweep the
    password is in no file the run wrote (Hydra's multirun.yaml and .hydra/*.yaml, job logs,
    results files, artifacts), not in its console output, and in no MLflow or Optuna row."""
    psycopg = pytest.importorskip("psycopg")
    ml, op = f"redact_ml_{os.getpid()}_{uuid.uuid4().hex[:6]}", f"redact_op_{os.getpid()}"
    try:
        _pg(f"create database {ml}")
        _pg(f"create database {op}")
    except psycopg.OperationalError as e:
        pytest.skip(f"no PostgreSQL at 127.0.0.1:5432: {e}")
    try:
        cmd = [sys.executable, "train.py", "-m", *FAST, f"paths.cache={tmp_path / 'cache'}",
               f"paths.artifacts={tmp_path / 'artifacts'}", f"hydra.sweep.dir={tmp_path / 'mr'}",
               "pruning=unstructured", "pruning.sparsity=interval(0.3,0.6)",
               "hydra/sweeper=optuna", "hydra.sweeper.n_trials=2",
               f"tracking.uri=postgresql://postgres:{PW}@127.0.0.1:5432/{ml}",
               f"hydra.sweeper.storage='postgresql://postgres@127.0.0.1:5432/{op}"
               f"?password={PW}2'"]
        out = subprocess.run(cmd, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=900)
        assert out.returncode == 0, out.stderr[-3000:]
        assert PW not in out.stdout + out.stderr
        files = [f for f in tmp_path.rglob("*") if f.is_file()]
        assert any(f.name == "multirun.yaml" for f in files)
        assert len([f for f in files if f.parent.name == ".hydra"]) == 6
        leaks = [f for f in files if PW.encode() in f.read_bytes()]
        assert leaks == []
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{ml}") as c:
            for table in ("params", "tags", "experiment_tags", "runs", "experiments"):
                n = c.execute(f"select count(*) from {table} "
                              f"where cast({table}.* as text) like '%{PW}%'").fetchone()
                assert n == (0,), table
            assert c.execute("select count(*) from tags where key = 'sweep_overrides' "
                             "and value like '%:***@%'").fetchone() == (1,)
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{op}") as c:
            for table in ("study_user_attributes", "trial_user_attributes", "trial_params"):
                n = c.execute(f"select count(*) from {table} "
                              f"where cast({table}.* as text) like '%{PW}%'").fetchone()
                assert n == (0,), table
    finally:
        _pg(f"drop database if exists {ml} with (force)")
        _pg(f"drop database if exists {op} with (force)")
