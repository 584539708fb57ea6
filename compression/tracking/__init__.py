"""MLflow tracking: experiment set-up, one run per job (child of a sweep's parent), run status.

Everything goes through an explicit `MlflowClient` and run ids rather than MLflow's global
"active run", so nothing leaks from one job to the next when Hydra runs jobs in one process.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import platform
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from compression.core import paths
from compression.core import validation as v
from compression.core.errors import ConfigError, TrialPruned, first_line
from compression.core.job import JobContext
from compression.core.redaction import redact

T = TypeVar("T")

if TYPE_CHECKING:  # MLflow takes seconds to import: only once a run really starts
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)
# MLflow's run status names (mlflow.entities.RunStatus), without importing MLflow to say them
FINISHED, FAILED, KILLED, RUNNING = "FINISHED", "FAILED", "KILLED", "RUNNING"

PARENT_TAG = "mlflow.parentRunId"
MAX_PARAM_LEN = 6000


@dataclass
class TrackingConfig:
    enabled: bool = True
    uri: str | None = None  # None: $MLFLOW_TRACKING_URI, else sqlite:///<project root>/mlflow.db
    experiment: str = "compression"
    run_name: str | None = None
    parent_run_id: str | None = None  # None: $COMPRESSION_PARENT_RUN_ID (set for multiruns)
    log_model: bool = True  # upload the compressed artifact file

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise ConfigError(f"tracking.enabled={self.enabled!r} must be true or false")
        if not isinstance(self.experiment, str) or not self.experiment.strip():
            raise ConfigError(f"tracking.experiment={self.experiment!r} must be a non-empty name")
        if self.uri is not None and not isinstance(self.uri, str):
            raise ConfigError(f"tracking.uri={self.uri!r} must be a URI string or null")
        if self.uri:
            check_uri(self.uri)
        v.one_of("tracking.log_model", self.log_model, [True, False])


def resolve_uri(uri: str | None = None) -> str:
    """Config value, else $MLFLOW_TRACKING_URI, else the project's SQLite database."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or paths.default_tracking_uri()


class StoreUnavailableError(ConfigError):
    """The tracking store does not answer: an outage, not a fault of the run's configuration
    (a sweep queues such a trial again instead of counting it as failed)."""


DATABASES = ("postgresql", "mysql", "mssql")  # MLflow's database stores besides sqlite
SCHEMES = ("http", "https", "sqlite", *DATABASES, "databricks")  # tracking stores we accept
PROBE_TIMEOUT_S = 5


def check_uri(uri: str, key: str = "tracking.uri") -> None:
    """Refuse, in one line, a URI MLflow has no tracking store for (it would fail with a
    traceback deep in the first job), and its deprecated file store (a path or `file:` URI)."""
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
    if uri in ("databricks", "databricks-uc"):  # MLflow's names for a Databricks workspace
        return
    if scheme in ("", "file"):
        raise ConfigError(f"{key}={redact(uri)}: MLflow's file store is in maintenance mode "
                          "and not supported; use a database, e.g. sqlite:///path/mlflow.db, "
                          "or a server, http://host:5000")
    if scheme.split("+")[0] not in SCHEMES:
        raise ConfigError(f"{key}={redact(uri)}: unknown scheme {scheme!r}; allowed: "
                          f"{', '.join(SCHEMES)} (database schemes may name a driver, e.g. "
                          "postgresql+psycopg2)")


@functools.cache
def check_reachable(uri: str) -> None:
    """Fail in one line, within PROBE_TIMEOUT_S, when the tracking store behind `uri` does not
    answer.

    MLflow itself retries an unreachable database for about 100 s (an SQLite file it cannot
    open too, and a server for minutes) and then raises a traceback; a sweep would pay that
    once per trial. Checked once per URI per process."""
    check_uri(uri)
    scheme = uri.split("://", 1)[0].lower()
    if scheme in ("http", "https"):
        _check_server(uri)
    elif scheme == "sqlite":
        _check_sqlite(uri)
    elif scheme.split("+")[0] in DATABASES:
        import sqlalchemy
        from sqlalchemy.pool import NullPool

        args = {} if scheme.startswith("mssql") else {"connect_timeout": PROBE_TIMEOUT_S}
        try:
            engine = sqlalchemy.create_engine(uri, poolclass=NullPool, connect_args=args)
            with engine.connect():
                pass
            engine.dispose()
        except (ImportError, ValueError, sqlalchemy.exc.SQLAlchemyError) as e:
            raise StoreUnavailableError(f"tracking.uri={redact(uri)}: cannot connect to the "
                                        f"MLflow database: {redact(first_line(e))}") from None


def _check_server(uri: str) -> None:
    """GET <server>/health (which MLflow's basic-auth app serves without credentials)."""
    import urllib.parse
    import urllib.request

    parts = urllib.parse.urlsplit(uri)
    host = parts.netloc.rsplit("@", 1)[-1]  # user:password@ is MLflow's, not the probe's
    health = urllib.parse.urlunsplit((parts.scheme, host, parts.path.rstrip("/") + "/health",
                                      "", ""))
    try:
        urllib.request.urlopen(health, timeout=PROBE_TIMEOUT_S).close()
    except (OSError, ValueError) as e:  # refused, timed out, HTTP error, malformed URL
        raise StoreUnavailableError(f"tracking.uri={redact(uri)}: no MLflow server answers "
                                    f"at {health} ({redact(e)})") from None


def _check_sqlite(uri: str) -> None:
    """Open the database file as MLflow will (creating it and its folder, as MLflow does)."""
    import sqlite3

    path = uri.split("://", 1)[1].split("?", 1)[0]
    path = path[1:] if path.startswith("/") else path  # sqlite:///rel, sqlite:////abs
    if path in ("", ":memory:"):
        return
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=rwc", uri=True,
                                                timeout=PROBE_TIMEOUT_S)) as db:
            db.execute("pragma schema_version")
    except (OSError, sqlite3.Error) as e:
        raise ConfigError(f"tracking.uri={redact(uri)}: cannot open the SQLite database "
                          f"{path}: {e}") from None


def client_for(uri: str | None) -> MlflowClient:
    """An MlflowClient for `uri` (see resolve_uri) whose store has answered (check_reachable)
    and, for SQLite, exists with its schema (sqlite_store_lock)."""
    from mlflow.tracking import MlflowClient

    resolved = resolve_uri(uri)
    check_reachable(resolved)
    with sqlite_store_lock(resolved) as sqlite:
        client = MlflowClient(tracking_uri=resolved)
        if sqlite:  # the store is built now, under the lock (migrations on a new database)
            _retry(client.search_experiments, max_results=1)
    return client


def _sqlite_path(uri: str) -> Path | None:
    """sqlite:///rel.db or sqlite:////abs.db -> the file; None for in-memory databases."""
    path = uri.split(":///", 1)[1].split("?", 1)[0] if ":///" in uri else ""
    return Path(path) if path and path != ":memory:" else None


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on `path` between processes of this machine (flock). Where
    the file cannot be opened (a read-only or missing folder) it locks nothing: the caller's
    own access then fails with its own error."""
    try:
        import fcntl
        handle = path.open("a")
    except (ImportError, OSError):  # no flock (Windows), or no place for the lock file
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def sqlite_store_lock(uri: str) -> Iterator[bool]:
    """For an SQLite URI: hold a lock on `<db>.lock` while MLflow opens (creates) the store.

    MLflow creates a new database's tables with ~60 Alembic migrations on first access, and
    two processes doing it at once (two sweeps started together, or the workers of one) break
    it for good (`table _alembic_tmp_experiments already exists` on every later run). Under
    the lock the first process migrates and the others find the tables made. Other URIs: no
    lock (a server or a database server serializes its own schema changes)."""
    db = _sqlite_path(uri) if uri.lower().startswith("sqlite:") else None
    if db is None:
        yield False
        return
    with contextlib.suppress(OSError):  # MLflow makes the folder too; the lock needs it first
        db.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(db.with_name(db.name + ".lock")):
        yield True


def _retry(fn: Any, *args: Any, attempts: int = 8, **kwargs: Any) -> Any:
    """SQLite writers lock each other under parallel workers; back off and retry."""
    from mlflow.exceptions import MlflowException

    for i in range(attempts):
        try:
            return fn(*args, **kwargs)
        except MlflowException as e:
            if "locked" not in str(e).lower() or i == attempts - 1:
                raise
            time.sleep(0.1 * 2**i)
    raise AssertionError("unreachable")


# Marks the project's experiments as model training (MLflow's own kind selector shows it, and
# MLflow versions that choose an experiment's first page by it open the runs table).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


def experiment_ui_path(exp_id: str) -> str:
    """The address, after `mlflow ui`'s base URL, that opens the experiment's runs table.
    MLflow 3.17's UI picks an experiment's first page from its GenAI / Model training switch
    (a browser setting, GenAI unless changed), not from the tag above; `workflowType` in the
    address sets that switch for the visit (docs/analysis.md quotes the UI's code)."""
    return f"#/experiments/{exp_id}?workflowType=machine_learning"


def ensure_experiment(client: MlflowClient, name: str) -> str:
    """Experiment id for `name`, creating it once (tolerant of a concurrent creator), tagged as
    model development so that `mlflow ui` opens its runs table; an existing experiment without
    the tag gets it too."""
    exp = client.get_experiment_by_name(name)
    exp_id = exp.experiment_id if exp is not None else _create_experiment(client, name)
    if exp is None or exp.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
        retry_concurrent_insert(
            lambda: client.set_experiment_tag(exp_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND))
    return exp_id


# What a store says when two writers insert the same key at once (SQLite, PostgreSQL through
# SQLAlchemy or an `mlflow server`): MLflow's get-or-insert of experiment tags and datasets is
# not atomic, so sweeps started together on a new store can collide.
_DUPLICATE_KEY = ("unique constraint failed", "uniqueviolation", "duplicate key",
                  "integrityerror")


def retry_concurrent_insert(write: Callable[[], T], attempts: int = 5) -> T:
    """Run an idempotent MLflow write, retrying when a concurrent writer inserted the same row
    first (the retry finds that row and updates or reuses it)."""
    from mlflow.exceptions import MlflowException

    for i in range(attempts):
        try:
            return write()
        except MlflowException as e:
            if not any(k in str(e).lower() for k in _DUPLICATE_KEY) or i == attempts - 1:
                raise
            time.sleep(0.05 * 2**i)
    raise AssertionError("unreachable")


def _create_experiment(client: MlflowClient, name: str) -> str:
    from mlflow.exceptions import MlflowException

    location = None
    if client.tracking_uri.startswith("sqlite:"):
        # Keep artifacts beside the database, not in whatever cwd the job started from.
        location = paths.default_artifact_root().as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:
        exp = client.get_experiment_by_name(name)  # somebody else created it meanwhile
        if exp is None:
            raise
        return exp.experiment_id


# What MLflow accepts in a param name (alphanumerics, _ - . space : /).
PARAM_NAME = re.compile(r"[\w\-. :/]+")


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """{'a': {'b': 1}} -> {'a.b': '1'}; lists are kept as their string form. A mapping whose keys
    MLflow would not take as names (layer patterns such as `conv*` in pruning.overrides) is
    kept whole as its string form, and so is an empty one ({}), so that it still shows."""
    out: dict[str, str] = {}
    for k, val in d.items():
        key = f"{prefix}{k}"
        if isinstance(val, Mapping) and val and all(PARAM_NAME.fullmatch(str(x)) for x in val):
            out.update(flatten(val, key + "."))
        elif isinstance(val, Mapping):
            out[key] = str(dict(val))[:MAX_PARAM_LEN]
        else:
            out[key] = str(val)[:MAX_PARAM_LEN]
    return out


@functools.cache
def cpu_model() -> str:
    """The CPU's model name, as /proc/cpuinfo gives it."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _git(*args: str) -> str:
    try:
        # the code's own checkout (PROJECT_ROOT), not $COMPRESSION_ROOT where outputs go
        out = subprocess.run(["git", *args], cwd=paths.PROJECT_ROOT, capture_output=True,
                             text=True, timeout=10, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


@functools.cache
def _git_state() -> tuple[str, str]:
    """(commit, dirty) once per process: the code a process runs was loaded at its start, and
    two git subprocesses per job add up in a sweep."""
    commit = _git("rev-parse", "HEAD") or "unknown"
    return commit, str(bool(_git("status", "--porcelain", "--untracked-files=no"))).lower()


def system_tags() -> dict[str, str]:
    import hydra
    import mlflow
    import optuna
    import torch

    commit, dirty = _git_state()
    return {
        "git_commit": commit,
        "mlflow.source.git.commit": commit,
        "git_dirty": dirty,
        "torch_version": torch.__version__,
        "mlflow_version": mlflow.__version__,
        "optuna_version": optuna.__version__,
        "hydra_version": hydra.__version__,
        "python_version": platform.python_version(),
        "torch_threads": str(torch.get_num_threads()),
        "cpu": cpu_model(),
        "cpu_count": str(os.cpu_count()),
        "hostname": socket.gethostname(),
    }


class Run:
    """One MLflow run, addressed by id through a client."""

    def __init__(self, client: MlflowClient, run_id: str) -> None:
        self.client, self.id = client, run_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, redact(val)[:MAX_PARAM_LEN]) for k, val in params.items()]
        for i in range(0, len(items), 100):  # MLflow's per-batch limit
            _retry(self.client.log_batch, self.id, params=items[i : i + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(val), now, step) for k, val in metrics.items()]
        for i in range(0, len(items), 1000):
            _retry(self.client.log_batch, self.id, metrics=items[i : i + 1000])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, redact(val)[:5000]) for k, val in tags.items()]
        _retry(self.client.log_batch, self.id, tags=items)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        _retry(self.client.log_artifact, self.id, str(path), artifact_path)

    def end(self, status: str) -> None:
        _retry(self.client.set_terminated, self.id, status)


def start_run(
    cfg: TrackingConfig, tags: Mapping[str, str] | None = None, run_name: str | None = None
) -> Run:
    client = client_for(cfg.uri)
    exp_id = _retry(ensure_experiment, client, cfg.experiment)
    # the launcher's tags (the Optuna sweeper's study_name and trial_number) and parent run
    job = JobContext.current()
    all_tags = {**system_tags(), "mlflow.source.name": "train.py", **job.tags, **(tags or {})}
    parent = cfg.parent_run_id or job.parent_run_id
    if not parent and in_multirun():
        # a sweep whose parent run could not be opened: a lone run here would be invisible to
        # the sweep's nesting, analysis and stale-run cleanup
        raise ConfigError("this job of a multirun has no MLflow parent run (the sweep could not "
                          "open one); not logging it as a lone run")
    if parent:
        all_tags[PARENT_TAG] = parent
    all_tags.setdefault("run_role", "child" if parent else "single")
    run = _retry(client.create_run, exp_id, run_name=run_name or cfg.run_name,
                 tags=redacted(all_tags))
    log.info("mlflow run %s (experiment %r at %s)", run.info.run_id, cfg.experiment,
             redact(client.tracking_uri))
    return Run(client, run.info.run_id)


def redacted(tags: Mapping[str, Any]) -> dict[str, str]:
    """Tag values as MLflow stores them, credentials redacted (see compression.core.redaction)."""
    return {k: redact(val)[:5000] for k, val in tags.items()}


def in_multirun() -> bool:
    """True inside a job of a Hydra multirun (`-m`)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


@contextlib.contextmanager
def run_status(run: Run) -> Iterator[Run]:
    """End `run` as FINISHED, FAILED (error recorded as tags) or KILLED (Ctrl-C / SIGTERM).

    Without this MLflow's atexit hook would mark a crashed run FINISHED (mlflow #3932)."""
    previous = signal.getsignal(signal.SIGTERM)
    in_main = _is_main_thread()
    if in_main:
        signal.signal(signal.SIGTERM, _raise_interrupt)  # so `kill` ends the run as KILLED
    try:
        yield run
    except KeyboardInterrupt as e:
        run.set_tags({"error_type": "KeyboardInterrupt", "error": str(e) or "interrupted"})
        run.end(KILLED)
        raise
    except TrialPruned as e:  # stopped by the sweep's pruner: not a failure of the config
        run.set_tags({"trial_state": "PRUNED", "pruned": str(e)})
        run.log_metrics({"pruned_at_epoch": float(e.step), "pruned_val_accuracy": e.value})
        run.end(KILLED)
        raise
    except BaseException as e:
        run.set_tags({"error_type": type(e).__name__, "error": str(e)[:5000] or repr(e)})
        run.end(FAILED)
        raise
    else:
        run.end(FINISHED)
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)


def _is_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
